"""Media input: validate a file once, then decode its audio lazily at 16 kHz.

Everything downstream runs on the audio clock declared here. Decoding uses PyAV (whose wheels
bundle FFmpeg), block by block, so memory does not grow with the recording's length.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from .errors import MediaError
from .video import is_moving_picture

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
"""Hz; the rate of every audio array in the package (Whisper's and Silero VAD's rate)."""

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".flv", ".m4v"})
AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".mp3", ".m4a", ".ogg", ".opus", ".aac", ".wma"})

_TRUNCATION_TOLERANCE_S = 0.5
"""An audio stream may end this much before its declared duration without being called truncated."""


_WAV_SLACK_BYTES = 64
"""A WAV file may be this many bytes shorter than its header says (a missing pad byte, a lost trailing chunk)."""

_BARE_STREAM_FORMATS = frozenset({"m4v", "h264", "hevc", "mpegvideo", "mjpeg"})
"""FFmpeg formats of video streams without a container: what a video file with a damaged header is read as."""


@dataclasses.dataclass(frozen=True)
class MediaInfo:
    """What :func:`probe` learned about a media file."""

    path: Path
    duration: float
    """seconds (container duration, else the longest stream's)."""
    has_audio: bool
    has_video: bool
    """a video stream that is not cover art."""
    audio_channels: int
    """0 when there is no audio stream."""
    audio_sample_rate: int
    """Hz as stored in the file; 0 when there is no audio stream."""


def probe(path: str | os.PathLike) -> MediaInfo:
    """Open ``path`` and describe its streams; the one validator for every media input.

    Reads every packet's timestamp (no decoding; the cost of reading the file once) to check
    that the streams reach the duration the file declares.

    Raises:
        MediaError: missing path, a directory, an empty or unreadable file, a file FFmpeg cannot
            read as media, or a truncated one (its packets end more than
            :data:`_TRUNCATION_TOLERANCE_S` before its declared duration).
    """
    path = Path(path)
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if not path.is_file():
        raise MediaError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise MediaError(f"{path}: empty file (0 bytes)")
    try:
        with open(path, "rb") as file:
            _check_wav_size(path, file.read(8))
    except OSError as e:
        raise MediaError(f"{path}: cannot be read ({e.strerror})") from e
    try:
        with av.open(str(path)) as container:
            if container.format.name in _BARE_STREAM_FORMATS and path.suffix.lower() in VIDEO_EXTENSIONS:
                raise MediaError(f"{path}: no {path.suffix} container found, only a bare {container.format.name} stream (a damaged header?)")
            audio = container.streams.audio[0] if container.streams.audio else None
            video = next((s for s in container.streams.video if is_moving_picture(s)), None)
            if audio is None and video is None:
                raise MediaError(f"{path}: no audio or video stream")
            stored = _stored_duration(container, [s for s in (audio, video) if s is not None])
            duration = _duration(container) or stored  # a recording that declares none (browser webm) lasts what it holds
            if stored + _TRUNCATION_TOLERANCE_S < duration:
                raise MediaError(
                    f"{path}: truncated or damaged: its media ends at {stored:.1f} s of a declared {duration:.1f} s"
                )
            return MediaInfo(
                path=path,
                duration=duration,
                has_audio=audio is not None,
                has_video=video is not None,
                audio_channels=audio.codec_context.channels if audio is not None else 0,
                audio_sample_rate=audio.codec_context.sample_rate if audio is not None else 0,
            )
    except av.FFmpegError as e:
        raise MediaError(f"{path}: not readable as audio or video ({_reason(e)})") from e


def _duration(container) -> float:
    if container.duration is not None:
        return container.duration / av.time_base
    durations = [float(s.duration * s.time_base) for s in container.streams if s.duration is not None]
    return max(durations, default=0.0)


def _check_wav_size(path: Path, head: bytes) -> None:
    """A WAV file must be as long as its RIFF header says (FFmpeg quietly shortens a cut one).

    Args:
        head: the file's first 8 bytes.
    """
    if len(head) < 8 or head[:4] != b"RIFF":
        return
    declared = int.from_bytes(head[4:8], "little") + 8
    actual = path.stat().st_size
    if declared < actual or declared >= 0xFFFFFFFF:  # streaming writers leave the size unknown
        return
    if declared - actual > _WAV_SLACK_BYTES:
        raise MediaError(f"{path}: truncated: {actual} of the {declared} bytes its WAV header declares")


def _stored_duration(container, streams: list) -> float:
    """Seconds from the container's start to the end of the last packet of ``streams``."""
    origin = (container.start_time or 0) / av.time_base
    end = 0.0
    for packet in container.demux(streams):
        if packet.pts is not None and packet.time_base is not None:
            end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base) - origin)
    return end


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error)


def iter_audio(
    path: str | os.PathLike,
    *,
    channels: int | None = 1,
    block_seconds: float = 10.0,
) -> Iterator[np.ndarray]:
    """Decode the first audio stream as consecutive float32 blocks at :data:`SAMPLE_RATE`.

    Args:
        path: any media file FFmpeg reads (video or audio, any rate and channel count).
        channels: ``1`` downmixes to mono; ``2`` keeps (or upmixes to) stereo; ``None`` keeps
            the file's channel count.
        block_seconds: length of each yielded block (the last one may be shorter).

    Yields:
        Arrays of shape ``(n_channels, n_samples)``, float32 in [-1, 1].

    Raises:
        MediaError: the file has no audio stream, or its audio stream is corrupt or truncated.
    """
    if block_seconds <= 0:
        raise ValueError(f"block_seconds must be positive, not {block_seconds}")
    info = probe(path)
    if not info.has_audio:
        raise MediaError(f"{info.path}: no audio stream (a video without sound)")
    n_channels = channels or info.audio_channels
    layout = {1: "mono", 2: "stereo"}.get(n_channels)
    if layout is None:
        raise ValueError(f"channels must be 1, 2 or None, not {channels}")
    block = int(round(block_seconds * SAMPLE_RATE))
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=SAMPLE_RATE)
    pending: list[np.ndarray] = []
    n_pending = 0
    n_decoded = 0
    try:
        with av.open(str(info.path)) as container:
            stream = container.streams.audio[0]
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    pending.append(out.to_ndarray())
                    n_pending += out.samples
                while n_pending >= block:
                    joined = np.concatenate(pending, axis=1)
                    yield joined[:, :block]
                    n_decoded += block
                    pending, n_pending = [joined[:, block:]], joined.shape[1] - block
            for out in resampler.resample(None):
                pending.append(out.to_ndarray())
                n_pending += out.samples
    except av.FFmpegError as e:
        raise MediaError(f"{info.path}: corrupt audio stream after {n_decoded / SAMPLE_RATE:.1f} s ({_reason(e)})") from e
    if n_pending:
        yield np.concatenate(pending, axis=1)
        n_decoded += n_pending
    decoded_seconds = n_decoded / SAMPLE_RATE
    if n_decoded == 0:
        raise MediaError(f"{info.path}: the audio stream holds no samples (truncated or empty)")
    if decoded_seconds + _TRUNCATION_TOLERANCE_S < info.duration and not info.has_video:
        raise MediaError(f"{info.path}: truncated: audio ends at {decoded_seconds:.1f} s of a declared {info.duration:.1f} s")


def load_audio(path: str | os.PathLike, *, channels: int | None = 1) -> np.ndarray:
    """The whole audio track at once, shape ``(n_samples,)`` for mono else ``(n_channels, n_samples)``.

    For short clips (training data, tests); long recordings go through :func:`iter_audio`.
    """
    audio = np.concatenate(list(iter_audio(path, channels=channels, block_seconds=60.0)), axis=1)
    return audio[0] if audio.shape[0] == 1 else audio
