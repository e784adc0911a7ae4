"""Transcripts a user already has: SRT, WebVTT, a JSON list of segments, or CSV.

Each becomes a list of :class:`TranscriptSegment` on the media's clock; it then replaces ASR.
"""

from __future__ import annotations

import csv
import dataclasses
import html
import json
import math
import os
import re
from pathlib import Path

from .errors import TranscriptError

FORMATS = ("srt", "vtt", "json", "csv")


@dataclasses.dataclass(frozen=True)
class TranscriptSegment:
    start: float
    """seconds on the media's clock."""
    end: float
    speaker: str | None
    text: str


_TIME = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{1,2})[.,](\d{1,3})")
_VOICE = re.compile(r"<v(?:\.[^\s>]*)?\s+([^>]+)>")
"""WebVTT voice span ``<v Name>``, also with classes (``<v.loud Bob>``): the cue's speaker."""
_CAPTION_SPEAKER = re.compile(r"^\s*([A-Z][A-Z0-9 .'-]{0,30}):\s+(?=\S)")
"""The captioning convention for a speaker in SRT (which has no speaker field): an upper-case
label such as ``HOST:`` or ``DR. LEE:``. A mixed-case ``Note: ...`` stays part of the text."""
_TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")

MIN_CUE_SECONDS = 0.02
"""A cue whose end equals its start is widened to this length (one Whisper encoder frame)."""
END_TOLERANCE = 0.5
"""seconds a cue may end past the media's end; such a cue is clipped to the end."""


def _seconds(text: str, path: Path, where: str) -> float:
    match = _TIME.fullmatch(text.strip())
    if not match:
        raise TranscriptError(f"{path}: {where}: cannot read time {text.strip()!r} (expected HH:MM:SS,mmm)")
    hours, minutes, seconds, fraction = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(fraction.ljust(3, "0")) / 1000


def _cue_text(body: str, kind: str) -> tuple[str | None, str]:
    """``(speaker, text)`` of a cue's text lines joined by spaces.

    WebVTT names the speaker with a voice span; SRT has no speaker field, so only the captioning
    convention of an upper-case label (``HOST: ...``) is read as one, in either format.
    """
    speaker = None
    voice = _VOICE.search(body) if kind == "vtt" else None
    if voice:
        speaker = voice.group(1).strip()
    elif caption := _CAPTION_SPEAKER.match(body):
        speaker, body = caption.group(1).strip(), body[caption.end() :]
    text = _TAG.sub("", body)
    if kind == "vtt":
        text = html.unescape(text)
    return speaker or None, " ".join(text.split())


def _read_cues(path: Path, text: str, kind: str) -> list[tuple[str, TranscriptSegment]]:
    """SRT and WebVTT: blocks separated by blank lines, each with a ``start --> end`` line."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks: list[tuple[int, list[str]]] = []  # (line number of the block's first line, its lines)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if number == 1 or not lines[number - 2].strip():
            blocks.append((number, []))
        blocks[-1][1].append(line)
    segments = []
    for index, (first_line, block) in enumerate(blocks):
        timing = next((i for i, line in enumerate(block) if "-->" in line), None)
        if timing is None:
            if (index == 0 and block[0].startswith("WEBVTT")) or block[0].startswith(("NOTE", "STYLE", "REGION")):
                continue
            raise TranscriptError(f"{path}: line {first_line}: no 'start --> end' line in this cue")
        where = f"line {first_line + timing}"
        start_text, end_text = block[timing].split("-->", 1)
        start = _seconds(start_text, path, where)
        end = _seconds(end_text.split()[0] if end_text.split() else "", path, where)
        speaker, body = _cue_text(" ".join(block[timing + 1 :]), kind)
        segments.append((where, TranscriptSegment(start, end, speaker, body)))
    return segments


def _read_json(path: Path, text: str, kind: str) -> list[tuple[str, TranscriptSegment]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TranscriptError(f"{path}: not valid JSON ({e})") from e
    if isinstance(data, dict) and "segments" in data:
        data = data["segments"]
    if not isinstance(data, list):
        raise TranscriptError(f"{path}: expected a JSON list of segments (or {{'segments': [...]}}), found {type(data).__name__}")
    segments = []
    for i, item in enumerate(data):
        where = f"segment {i}"
        if not isinstance(item, dict) or not {"start", "end", "text"} <= item.keys():
            raise TranscriptError(f"{path}: {where}: needs 'start', 'end' and 'text'")
        start, end = (_number(item[key], path, where) for key in ("start", "end"))
        text_value, speaker = item["text"], item.get("speaker")
        if text_value is not None and not isinstance(text_value, str):
            raise TranscriptError(f"{path}: {where}: 'text' must be a string or null, not {type(text_value).__name__}")
        if speaker is not None and not isinstance(speaker, (str, int)) or isinstance(speaker, bool):
            raise TranscriptError(f"{path}: {where}: 'speaker' must be a string or null, not {type(speaker).__name__}")
        speaker = None if speaker is None else str(speaker).strip() or None
        segments.append((where, TranscriptSegment(start, end, speaker, (text_value or "").strip())))
    return segments


def _number(value, path: Path, where: str) -> float:
    if isinstance(value, bool):
        raise TranscriptError(f"{path}: {where}: start/end must be numbers of seconds, not {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise TranscriptError(f"{path}: {where}: start/end must be numbers of seconds, not {value!r}") from e


def _read_csv(path: Path, text: str, kind: str) -> list[tuple[str, TranscriptSegment]]:
    try:
        rows = list(csv.DictReader(text.splitlines()))
    except csv.Error as e:
        raise TranscriptError(f"{path}: not readable as CSV ({e})") from e
    if not rows:
        raise TranscriptError(f"{path}: CSV has no rows")
    missing = {"start", "end", "text"} - set(rows[0].keys())
    if missing:
        raise TranscriptError(f"{path}: CSV lacks column(s) {sorted(missing)}; expected start,end,speaker,text")
    segments = []
    for line, row in enumerate(rows, start=2):
        where = f"line {line}"
        if None in row:
            raise TranscriptError(f"{path}: {where}: more fields than the header's {len(rows[0]) - (None in rows[0])}")
        start, end = (_number(row[key], path, where) for key in ("start", "end"))
        segments.append((where, TranscriptSegment(start, end, (row.get("speaker") or "").strip() or None, (row["text"] or "").strip())))
    return segments


_READERS = {"srt": _read_cues, "vtt": _read_cues, "json": _read_json, "csv": _read_csv}


def read_transcript(path: str | os.PathLike, *, media_duration: float | None = None) -> list[TranscriptSegment]:
    """Parse a transcript file (format from its extension) into segments sorted by start.

    Speakers come from what each format defines: WebVTT voice spans (``<v Bob>``, ``<v.loud Bob>``),
    the ``speaker`` field of JSON and column of CSV, and in SRT (and WebVTT without voices) an
    upper-case caption label (``HOST: ...``); ``Note: ...`` stays text. A JSON ``"text": null``
    is empty text.

    Times are seconds. A cue whose end equals its start is widened to :data:`MIN_CUE_SECONDS`
    (so it keeps a row and its voice output, analysed over the usual widened span). Overlapping
    cues are kept (people do talk at once): each is its own segment and the grid overlaps there.

    Args:
        media_duration: seconds; when given, a cue ending up to :data:`END_TOLERANCE` past it is
            clipped to it, and one ending later, or starting at or after it, is an error.

    Raises:
        TranscriptError: one line naming the file and the place: unknown format, not UTF-8,
            empty, unparsable, wrong shape, a time that is not finite, negative, or ends before
            it starts, or a cue past the media's end.
    """
    path = Path(path)
    if not path.is_file():
        raise TranscriptError(f"{path}: no such transcript file")
    kind = path.suffix.lower().lstrip(".")
    if kind not in _READERS:
        raise TranscriptError(f"{path}: unknown transcript format {path.suffix!r}; expected one of {FORMATS}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise TranscriptError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8") from e
    except OSError as e:
        raise TranscriptError(f"{path}: cannot read ({e.strerror})") from e
    if not text.strip():
        raise TranscriptError(f"{path}: the file is empty")
    found = _READERS[kind](path, text, kind)
    if not found:
        raise TranscriptError(f"{path}: no segments found")
    return sorted((_checked(s, path, where, media_duration) for where, s in found), key=lambda s: s.start)


def _checked(s: TranscriptSegment, path: Path, where: str, media_duration: float | None) -> TranscriptSegment:
    """``s`` with valid times: widened when empty, clipped to the media's end within the tolerance."""
    if not (math.isfinite(s.start) and math.isfinite(s.end)):
        raise TranscriptError(f"{path}: {where}: times must be finite seconds, not {s.start}..{s.end}")
    if s.start < 0 or s.end < s.start:
        raise TranscriptError(f"{path}: {where}: times must satisfy 0 <= start <= end, not {s.start}..{s.end}")
    start, end = s.start, max(s.end, s.start + MIN_CUE_SECONDS)
    if media_duration is not None:
        if s.end > media_duration + END_TOLERANCE:
            raise TranscriptError(f"{path}: {where}: ends at {s.end:.2f} s, past the media's end at {media_duration:.2f} s")
        if s.start >= media_duration:
            raise TranscriptError(f"{path}: {where}: starts at {s.start:.2f} s, at or after the media's end at {media_duration:.2f} s")
        if end > media_duration:
            start, end = min(start, media_duration - MIN_CUE_SECONDS), media_duration
    return dataclasses.replace(s, start=max(start, 0.0), end=end)
