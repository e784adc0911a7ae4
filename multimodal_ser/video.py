"""Lazy video frame decoding at a fixed sampling rate, as the face branch needs it.

Frames are sampled on a regular grid of times ``t = 0, 1/fps, 2/fps, ...`` seconds on the
media's clock (0 is the container's start time: for ordinary files, whose streams all start at
0, the same clock as the audio branch's sample 0).
For each sample time the frame *shown* at that time is returned: the last decoded frame whose
presentation timestamp is ``<= t``. This is chosen from the presentation timestamps, not from
a nominal frame rate, so variable-frame-rate recordings (phones, screen captures) come out
right. Sample times before the first frame get the first frame. The last frame is shown until
its own end (``pts + duration``); no sample is produced past it.

Frames are decoded one at a time and only those that are sampled are converted to RGB, so
memory is flat in the recording's length.

Rotation: phones store portrait video as landscape pixels plus a display matrix. PyAV 18
exposes its rotation as ``VideoFrame.rotation`` (degrees counter-clockwise, from the frame's
``DISPLAYMATRIX`` side data, which FFmpeg copies from the stream); older muxers wrote a
``rotate`` tag (degrees clockwise) in the stream metadata instead, which is the fallback.
Frames are returned as displayed, rotated by a multiple of 90 degrees (flips in the display
matrix are not applied; they are practically never written).

Errors (decided here and relied on by the face branch):

- missing file, unreadable or non-media file, no video stream, or nothing decodable before the
  first frame: :class:`~multimodal_ser.errors.MediaError` naming the file and the problem;
- damaged data inside the stream: packets that fail to decode are skipped with a logged
  warning (the decoder picks up again at the next decodable frame, for H.264 the next
  keyframe, so the previous frame stays on screen meanwhile, as a player would show it);
- a read error (a truncated file): the stream ends there with a logged warning giving the time
  reached; the frames yielded before stay valid. A stream that ends well before the duration
  the container declares is logged the same way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from .errors import MediaError
from .validate import valid_fps

logger = logging.getLogger(__name__)

DEFAULT_FPS = 4.0
"""Sampled frames per second by default: enough for expression and head movement, cheap."""

_SHORT_STREAM_TOLERANCE_S = 0.5
"""A stream ending more than this before the container's declared duration is reported."""


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` reads from a file's first video stream."""

    width: int
    """Displayed width in pixels (after rotation)."""
    height: int
    """Displayed height in pixels (after rotation)."""
    duration: float | None
    """Seconds, as the container declares it; None when unknown."""
    frame_rate: float | None
    """Average frames per second as declared; None when unknown."""
    rotation: int
    """Degrees counter-clockwise applied to the coded pixels for display (0, 90, 180 or -90)."""


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise MediaError(f"{path}: file not found")
    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as e:
        raise MediaError(f"{path}: not a readable media file ({e})") from e
    if not container.streams:
        container.close()
        raise MediaError(f"{path}: no audio or video stream found (a truncated or damaged file?)")
    return container


def is_moving_picture(stream: av.stream.Stream) -> bool:
    """A video stream that is not cover art (an MP3/M4A picture is an ``attached_pic`` video stream)."""
    return stream.type == "video" and not (stream.disposition & av.stream.Disposition.attached_pic)


def _video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    for stream in container.streams.video:
        if is_moving_picture(stream):
            return stream
    kinds = ", ".join(s.type for s in container.streams) or "none"
    raise MediaError(f"{path}: no video stream (expected one; found streams: {kinds})")


def has_video(path: str | os.PathLike) -> bool:
    """True if ``path`` holds a video stream (cover art in an audio file does not count).

    Raises:
        MediaError: the file is missing or is not a media file at all.
    """
    path = Path(path)
    with _open(path) as container:
        return any(is_moving_picture(s) for s in container.streams)


def _stream_rotation(stream: av.video.stream.VideoStream) -> int:
    """Legacy ``rotate`` tag (clockwise degrees) as counter-clockwise degrees; 0 when absent."""
    tag = stream.metadata.get("rotate")
    if tag is None:
        return 0
    try:
        return -int(float(tag))
    except ValueError:
        return 0


def _quarter_turns(rotation: float, path: Path) -> int:
    """Counter-clockwise degrees to a number of quarter turns for :func:`numpy.rot90`."""
    turns = round(rotation / 90.0)
    if abs(rotation - 90.0 * turns) > 1.0:
        logger.warning("%s: display rotation %.1f deg is not a multiple of 90; using %d", path, rotation, 90 * turns)
    return turns % 4


def _to_rgb(frame: av.VideoFrame, turns: int) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24")  # a strided view when FFmpeg pads its lines
    rgb = np.ascontiguousarray(np.rot90(rgb, k=turns) if turns else rgb)
    rgb.flags.writeable = False
    return rgb


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Read the first video stream's displayed size, duration, frame rate and rotation.

    Decodes one frame (the rotation lives in frame side data).

    Raises:
        MediaError: as :func:`iter_frames`.
    """
    path = Path(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        try:
            frame = next(container.decode(stream), None)
        except av.error.FFmpegError as e:
            raise MediaError(f"{path}: video stream cannot be decoded ({e})") from e
        if frame is None:
            raise MediaError(f"{path}: video stream holds no decodable frame")
        turns = _quarter_turns(frame.rotation or _stream_rotation(stream), path)
        width, height = (frame.width, frame.height) if turns % 2 == 0 else (frame.height, frame.width)
        return VideoInfo(
            width=width,
            height=height,
            duration=_declared_duration(container, stream),
            frame_rate=float(stream.average_rate) if stream.average_rate else None,
            rotation=(0, 90, 180, -90)[turns],
        )


def _declared_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _decode(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, path: Path
) -> Iterator[av.VideoFrame]:
    """Decoded frames in presentation order; skips undecodable packets, stops at a read error."""
    packets = container.demux(stream)
    bad_packets = 0
    reached = 0.0
    while True:
        try:
            packet = next(packets, None)
        except av.error.FFmpegError as e:
            logger.warning("%s: reading the video failed after %.2f s (%s); ending the stream there", path, reached, e)
            break
        if packet is None:
            break
        try:
            frames = packet.decode()
        except av.error.FFmpegError as e:
            if bad_packets == 0:
                logger.warning("%s: undecodable video data after %.2f s (%s); skipping it", path, reached, e)
            bad_packets += 1
            continue
        for frame in frames:
            if frame.time is not None:
                reached = frame.time
            yield frame
    if bad_packets:
        logger.warning("%s: skipped %d undecodable video packets in all", path, bad_packets)


def iter_frames(path: str | os.PathLike, *, fps: float = DEFAULT_FPS) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(time, rgb)`` for the frame shown at each sample time ``k / fps``.

    Args:
        path: a media file with a video stream (mp4, mov, mkv, webm, avi, ...).
        fps: samples per second, in (0, 120]. Sampling faster than the video's own frame rate
            repeats frames, as a display would.

    Yields:
        ``time``: float seconds from the container's start; ``rgb``: read-only uint8 array of
        shape ``(height, width, 3)`` as displayed (rotation applied). The same array object is
        yielded again when one frame covers several sample times.

    Raises:
        MediaError: missing file, not a media file, no video stream, or no frame decodable
            at all (damage after the first frame is skipped or ends the stream with a warning
            instead; see the module docstring).
        ValueError: ``fps`` out of range.
    """
    fps = valid_fps(fps)
    path = Path(path)
    container = _open(path)
    with container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        origin = (container.start_time or 0) / av.time_base
        legacy_rotation = _stream_rotation(stream)
        nominal_frame_s = 1.0 / float(stream.average_rate) if stream.average_rate else 1.0 / fps
        declared = _declared_duration(container, stream)
        k = 0  # index of the next sample time k / fps
        shown = None  # (start time, frame, rgb or None until needed) of the frame on screen
        turns = 0
        decoded = 0
        for frame in _decode(container, stream, path):
            if frame.time is None:
                logger.debug("%s: skipping a video frame without a timestamp", path)
                continue
            t = frame.time - origin
            if shown is not None and t <= shown[0]:
                logger.debug("%s: skipping a video frame whose timestamp %.3f s goes backwards", path, t)
                continue
            decoded += 1
            if shown is None:
                turns = _quarter_turns(frame.rotation or legacy_rotation, path)
            else:
                _, old, rgb = shown
                while k / fps < t:
                    if rgb is None:
                        rgb = _to_rgb(old, turns)
                    yield k / fps, rgb
                    k += 1
            shown = (t, frame, None)

        if shown is None:
            raise MediaError(f"{path}: video stream holds no decodable frame")
        start, last, rgb = shown
        frame_s = float(last.duration * last.time_base) if last.duration and last.time_base else nominal_frame_s
        end = start + frame_s
        while k / fps < end:
            if rgb is None:
                rgb = _to_rgb(last, turns)
            yield k / fps, rgb
            k += 1
        if declared is not None and end < declared - _SHORT_STREAM_TOLERANCE_S:
            logger.warning(
                "%s: video stream ends at %.2f s but the file declares %.2f s (truncated?)", path, end, declared
            )
        logger.debug("%s: decoded %d video frames, yielded %d samples at %.3g fps", path, decoded, k, fps)
