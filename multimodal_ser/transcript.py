"""Transcripts a user already has: SRT, WebVTT, a JSON list of segments, or CSV.

Each becomes a list of :class:`TranscriptSegment` on the media's clock; it then replaces ASR.
"""

from __future__ import annotations

import csv
import dataclasses
import json
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
_SPEAKER_PREFIX = re.compile(r"^\s*(?:<v\s+([^>]+)>|\[?([A-Za-z][\w .'-]{0,30}?)\]?:\s)")


def _seconds(text: str, path: Path, where: str) -> float:
    match = _TIME.fullmatch(text.strip())
    if not match:
        raise TranscriptError(f"{path}: {where}: cannot read time {text.strip()!r} (expected HH:MM:SS,mmm)")
    hours, minutes, seconds, fraction = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(fraction.ljust(3, "0")) / 1000


def _split_speaker(text: str) -> tuple[str | None, str]:
    match = _SPEAKER_PREFIX.match(text)
    if not match:
        return None, text.strip()
    speaker = (match.group(1) or match.group(2)).strip()
    rest = text[match.end() :]
    return speaker, re.sub(r"</v>", "", rest).strip()


def _read_cues(path: Path, text: str) -> list[TranscriptSegment]:
    """SRT and WebVTT: blocks separated by blank lines, each with a ``start --> end`` line."""
    segments = []
    for number, block in enumerate(re.split(r"\n\s*\n", text.replace("\r\n", "\n").strip()), start=1):
        lines = [line for line in block.split("\n") if line.strip()]
        timing = next((i for i, line in enumerate(lines) if "-->" in line), None)
        if timing is None:
            if number == 1 and lines and lines[0].startswith("WEBVTT") or lines and lines[0].startswith(("NOTE", "STYLE", "REGION")):
                continue
            raise TranscriptError(f"{path}: cue {number}: no 'start --> end' line")
        start_text, end_text = lines[timing].split("-->", 1)
        where = f"cue {number}"
        start = _seconds(start_text, path, where)
        end = _seconds(end_text.split()[0] if end_text.split() else "", path, where)
        speaker, body = _split_speaker(" ".join(lines[timing + 1 :]))
        segments.append(TranscriptSegment(start, end, speaker, re.sub(r"<[^>]+>", "", body).strip()))
    return segments


def _read_json(path: Path, text: str) -> list[TranscriptSegment]:
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
        if not isinstance(item, dict) or not {"start", "end", "text"} <= item.keys():
            raise TranscriptError(f"{path}: segment {i}: needs 'start', 'end' and 'text'")
        try:
            start, end = float(item["start"]), float(item["end"])
        except (TypeError, ValueError) as e:
            raise TranscriptError(f"{path}: segment {i}: start/end must be numbers of seconds") from e
        segments.append(TranscriptSegment(start, end, item.get("speaker"), str(item["text"]).strip()))
    return segments


def _read_csv(path: Path, text: str) -> list[TranscriptSegment]:
    rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        raise TranscriptError(f"{path}: CSV has no rows")
    missing = {"start", "end", "text"} - set(rows[0].keys())
    if missing:
        raise TranscriptError(f"{path}: CSV lacks column(s) {sorted(missing)}; expected start,end,speaker,text")
    segments = []
    for line, row in enumerate(rows, start=2):
        try:
            start, end = float(row["start"]), float(row["end"])
        except (TypeError, ValueError) as e:
            raise TranscriptError(f"{path}: line {line}: start/end must be numbers of seconds") from e
        segments.append(TranscriptSegment(start, end, (row.get("speaker") or "").strip() or None, (row["text"] or "").strip()))
    return segments


_READERS = {"srt": _read_cues, "vtt": _read_cues, "json": _read_json, "csv": _read_csv}


def read_transcript(path: str | os.PathLike, *, media_duration: float | None = None) -> list[TranscriptSegment]:
    """Parse a transcript file (format from its extension) into segments sorted by start.

    Args:
        media_duration: seconds; when given, a segment ending more than 0.5 s past it is an error.

    Raises:
        TranscriptError: unknown format, unparsable content, a segment with ``end <= start``
            or negative times, or a segment past the media's end.
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
        raise TranscriptError(f"{path}: not UTF-8 text") from e
    segments = _READERS[kind](path, text)
    if not segments:
        raise TranscriptError(f"{path}: no segments found")
    for i, s in enumerate(segments):
        if s.start < 0 or s.end <= s.start:
            raise TranscriptError(f"{path}: segment {i + 1}: times must satisfy 0 <= start < end, not {s.start}..{s.end}")
        if media_duration is not None and s.end > media_duration + 0.5:
            raise TranscriptError(f"{path}: segment {i + 1} ends at {s.end:.2f} s, past the media's end at {media_duration:.2f} s")
    return sorted(segments, key=lambda s: s.start)
