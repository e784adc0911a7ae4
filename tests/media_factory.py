"""Tiny media files made in a test's tmp_path (no data from elsewhere)."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf


def write_wav(path: Path, samples: np.ndarray, rate: int = 16_000) -> Path:
    """``samples`` shape ``(n,)`` or ``(n, channels)``, float in [-1, 1]."""
    sf.write(path, samples, rate, subtype="PCM_16")
    return path


def tone(seconds: float, *, frequency: float = 220.0, rate: int = 16_000, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def write_video(path: Path, *, seconds: float = 2.0, fps: int = 10, size: tuple[int, int] = (64, 48), audio: np.ndarray | None = None, audio_rate: int = 16_000, container_options: dict | None = None) -> Path:
    """An mp4 (or any container the suffix names) of grey frames, with a mono AAC track when
    ``audio`` (shape ``(n,)``) is given; ``container_options`` e.g. ``{"movflags": "faststart"}``."""
    with av.open(str(path), "w", options=container_options or {}) as container:
        video = container.add_stream("mpeg4", rate=fps)
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        sound = _audio_stream(container, audio_rate) if audio is not None else None
        for i in range(int(seconds * fps)):
            image = np.full((size[1], size[0], 3), 40 + (i * 7) % 180, dtype=np.uint8)
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if sound is not None:
            _mux_audio(container, sound, audio, audio_rate)
    return path


def _audio_stream(container, rate: int):
    """A mono AAC stream of ``rate`` Hz in ``container`` (added before anything is muxed)."""
    sound = container.add_stream("aac", rate=rate)
    sound.layout = "mono"
    return sound


def _mux_audio(container, sound, audio: np.ndarray, rate: int) -> None:
    """Encode ``audio`` (shape ``(n,)``, float in [-1, 1], ``rate`` Hz) into the stream ``sound`` and mux it."""
    step = 1024
    for start in range(0, len(audio), step):
        frame = av.AudioFrame.from_ndarray(audio[start : start + step].astype(np.float32)[None], format="flt", layout="mono")
        frame.sample_rate, frame.pts = rate, start
        for packet in sound.encode(frame):
            container.mux(packet)
    for packet in sound.encode():
        container.mux(packet)


def write_rgb_video(path: Path, frames: list[np.ndarray], *, rate: int = 10, audio: np.ndarray | None = None, audio_rate: int = 16_000) -> Path:
    """An H.264 mp4 of RGB frames, each shape ``(height, width, 3)`` uint8 with even sizes, with a
    mono AAC track when ``audio`` (shape ``(n,)``, float in [-1, 1], ``audio_rate`` Hz) is given."""
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        sound = _audio_stream(container, audio_rate) if audio is not None else None
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            _mux_audio(container, sound, audio, audio_rate)
    return path


def write_clip(
    path: Path,
    levels: list[int],
    *,
    times: list[float] | None = None,
    rate: int = 10,
    size: tuple[int, int] = (64, 48),
    rotation: int | None = None,
    container_options: dict | None = None,
    keyframe_every: int | None = None,
) -> Path:
    """An H.264 mp4 whose frame i is uniform grey ``levels[i]`` shown from ``times[i]`` (default i / rate).

    Lossless (qp 0) so a frame can be recognised by its grey level; ``rotation`` (degrees
    counter-clockwise) is written as the stream's display matrix.
    """
    width, height = size
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream("libx264", rate=rate, options={"qp": "0"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if keyframe_every is not None:
            stream.codec_context.gop_size = keyframe_every
        if times is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i, level in enumerate(levels):
            image = np.full((height, width, 3), level, dtype=np.uint8)
            image[:, : width // 4] = 255  # a white strip on the left shows the orientation
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = round(times[i] * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def place(canvas: np.ndarray, image: np.ndarray, x: int, y: int) -> np.ndarray:
    """A copy of ``canvas`` with ``image`` pasted at column ``x``, row ``y`` (pixels)."""
    out = canvas.copy()
    out[y : y + image.shape[0], x : x + image.shape[1]] = image
    return out


def declare_mkv_duration(path: Path, seconds: float) -> Path:
    """Overwrite the Duration element of a Matroska file (its header) with ``seconds``; the content stays."""
    data = bytearray(path.read_bytes())
    at = data.index(b"\x44\x89")  # the Duration element's id, in the Segment Info
    size = data[at + 2] & 0x0F  # 4 or 8 bytes of float, in milliseconds (the default timecode scale)
    data[at + 3 : at + 3 + size] = struct.pack(">d" if size == 8 else ">f", seconds * 1000.0)
    path.write_bytes(bytes(data))
    return path
