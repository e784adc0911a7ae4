"""Lazy frame decoding: sampling times, variable frame rate, rotation, damaged and wrong inputs."""

from __future__ import annotations

import logging
import math
import tracemalloc

import av
import numpy as np
import pytest
from media_factory import write_clip

from multimodal_ser.errors import MediaError
from multimodal_ser.validate import valid_fps
from multimodal_ser.video import has_video, iter_frames, probe_video


def grey(rgb: np.ndarray) -> int:
    """The grey level of the frame outside its white strip."""
    return int(np.median(rgb[:, rgb.shape[1] // 2 :, 0]))


@pytest.mark.parametrize("fps", [1.0, 2.5, 4.0, 10.0, 30.0])
def test_sample_count_is_duration_times_fps(tmp_path, fps):
    clip = write_clip(tmp_path / "clip.mp4", [100] * 30, rate=10)  # 3.0 s
    samples = list(iter_frames(clip, fps=fps))
    assert len(samples) == math.ceil(3.0 * fps)
    assert [t for t, _ in samples] == pytest.approx([k / fps for k in range(len(samples))])
    assert all(rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8 for _, rgb in samples)


def test_each_sample_is_the_frame_shown_at_its_time(tmp_path):
    levels = [20 + 10 * i for i in range(20)]  # 2 s at 10 fps, frame i has grey 20 + 10 i
    clip = write_clip(tmp_path / "clip.mp4", levels, rate=10)
    for t, rgb in iter_frames(clip, fps=4.0):
        shown = int(math.floor(t * 10 + 1e-9))
        assert abs(grey(rgb) - levels[shown]) <= 3, f"at {t} s expected frame {shown}"


def test_variable_frame_rate_uses_presentation_timestamps(tmp_path):
    times = [0.0, 0.1, 0.5, 0.55, 1.5]
    levels = [20, 60, 100, 140, 180]
    clip = write_clip(tmp_path / "vfr.mp4", levels, times=times)
    samples = list(iter_frames(clip, fps=4.0))
    # the frame shown at t is the last one with pts <= t; the last frame lasts one frame period
    expected = {0.0: 20, 0.25: 60, 0.5: 100, 0.75: 140, 1.0: 140, 1.25: 140, 1.5: 180}
    assert [t for t, _ in samples] == pytest.approx(list(expected))
    for (t, rgb), level in zip(samples, expected.values()):
        assert abs(grey(rgb) - level) <= 3, f"at {t} s"


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_is_honoured(tmp_path, rotation):
    clip = write_clip(tmp_path / "rotated.mp4", [100] * 5, size=(64, 32), rotation=rotation)
    info = probe_video(clip)
    assert info.rotation == rotation
    _, rgb = next(iter_frames(clip))
    # the coded frame is 64 wide with its white strip on the left; display turns it counter-clockwise
    if rotation == 180:
        assert rgb.shape == (32, 64, 3) and (info.width, info.height) == (64, 32)
        assert rgb[:, -4:].min() == 255 and rgb[:, :4].max() < 200  # strip now on the right
    else:
        assert rgb.shape == (64, 32, 3) and (info.width, info.height) == (32, 64)
        strip_rows = rgb[-4:] if rotation == 90 else rgb[:4]  # 90 ccw: left goes to the bottom
        other_rows = rgb[:4] if rotation == 90 else rgb[-4:]
        assert strip_rows.min() == 255 and other_rows.max() < 200


def test_unrotated_clip(tmp_path):
    clip = write_clip(tmp_path / "plain.mp4", [100] * 5, size=(64, 32))
    _, rgb = next(iter_frames(clip))
    assert rgb.shape == (32, 64, 3) and rgb[:, :4].min() == 255
    assert probe_video(clip).rotation == 0


def test_frames_are_read_only_and_contiguous(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", [100] * 5, size=(70, 30))  # odd width: FFmpeg pads lines
    _, rgb = next(iter_frames(clip))
    assert rgb.flags.c_contiguous and not rgb.flags.writeable


def test_memory_is_flat_in_the_video_length(tmp_path):
    """Peak Python-visible memory while decoding 2 s and 20 s of 320x240 video at 10 fps."""

    def peak(seconds: int) -> int:
        clip = write_clip(tmp_path / f"{seconds}.mp4", [100] * (10 * seconds), size=(320, 240))
        tracemalloc.start()
        n = sum(1 for _ in iter_frames(clip, fps=10.0))
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert n == 10 * seconds
        return top

    frame_bytes = 320 * 240 * 3
    assert peak(20) < 4 * frame_bytes
    assert peak(20) < peak(2) + frame_bytes


def test_truncated_real_mp4_raises_media_error(tmp_path, shared_data):
    source = shared_data / "talking-heads" / "retalking-3.mp4"
    data = source.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])  # the moov index sits at the end: now gone
    with pytest.raises(MediaError, match="truncated.mp4"):
        list(iter_frames(truncated))


def test_truncated_stream_gives_frames_up_to_the_cut_with_a_warning(tmp_path, caplog):
    rng = np.random.default_rng(0)
    levels = rng.integers(0, 200, 40).tolist()  # 4 s
    clip = write_clip(tmp_path / "faststart.mp4", levels, container_options={"movflags": "faststart"})
    data = clip.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # index first, so a cut keeps it
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="multimodal_ser.video"):
        samples = list(iter_frames(truncated, fps=10.0))
    assert 5 <= len(samples) < 40
    assert any("cut.mp4" in r.getMessage() and "truncated" in r.getMessage() for r in caplog.records)
    for t, rgb in samples:  # what was decoded is right
        assert abs(grey(rgb) - levels[round(t * 10)]) <= 3


def test_damaged_packets_are_skipped_and_decoding_goes_on(tmp_path, caplog):
    levels = [20 + 4 * i for i in range(40)]
    clip = write_clip(tmp_path / "clip.mp4", levels, keyframe_every=10)
    with av.open(str(clip)) as container:
        positions = [p.pos for p in container.demux(video=0) if p.size]
    data = bytearray(clip.read_bytes())
    for i in (13, 14):  # two P-frames of the second second: break their NAL length fields
        data[positions[i] : positions[i] + 4] = b"\xff\xff\xff\xff"
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="multimodal_ser.video"):
        samples = list(iter_frames(damaged, fps=10.0))
    assert any("damaged.mp4" in r.getMessage() and "skipping" in r.getMessage() for r in caplog.records)
    assert len(samples) == 40  # the damage costs those frames' content, not the rest of the recording
    for t, rgb in samples:
        if t < 1.25 or t >= 2.0:  # before the damage, and from the next keyframe on
            assert abs(grey(rgb) - levels[round(t * 10)]) <= 3, f"at {t} s"


def test_missing_file(tmp_path):
    with pytest.raises(MediaError, match="not found"):
        list(iter_frames(tmp_path / "nothing.mp4"))
    with pytest.raises(MediaError, match="not found"):
        has_video(tmp_path / "nothing.mp4")


def test_not_a_media_file(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 50)
    with pytest.raises(MediaError, match="notes.mp4"):
        has_video(text)
    with pytest.raises(MediaError, match="notes.mp4"):
        list(iter_frames(text))


def test_audio_only_file_has_no_video(tmp_path):
    path = tmp_path / "speech.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        tone = (0.2 * np.sin(np.arange(16000) * 0.1)).astype(np.float32)
        for start in range(0, 16000, 1024):
            frame = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="flt", layout="mono")
            frame.sample_rate, frame.pts = 16000, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert has_video(path) is False
    with pytest.raises(MediaError, match="no video stream"):
        list(iter_frames(path))


def test_has_video_on_a_video(tmp_path):
    assert has_video(write_clip(tmp_path / "clip.mp4", [100] * 3)) is True


@pytest.mark.parametrize("fps", [0, -1.0, float("nan"), 1000, "4", True])
def test_invalid_fps(tmp_path, fps):
    with pytest.raises(ValueError, match="fps"):
        valid_fps(fps)
    with pytest.raises(ValueError, match="fps"):
        list(iter_frames(tmp_path / "never-opened.mp4", fps=fps))
