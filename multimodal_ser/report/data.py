"""What a report draws for one timeline: its lanes as compact column arrays, and where each came from."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..labels import EMOTIONS, SENTIMENTS
from ..timeline import Timeline

LANES: dict[str, tuple[str, str]] = {
    "speakers": ("from timing + speaker", "timing: the speaker column (stereo channel, transcript or diarisation)"),
    "words": ("from transcript / ASR", "the transcript or ASR (words.parquet)"),
    "voice": ("from the voice", "the voice (audio_label; opacity = audio_confidence)"),
    "words' emotion": ("from the words", "the words (text_label; the thin stripe: sentiment)"),
    "face": ("from the face", "the face (face_label, from video frames)"),
    "fused": ("fusion of fused_from", "fusion of the modalities named in fused_from (label; opacity = confidence)"),
    "confidence": ("fusion, 0-1", "fusion: the fused label's confidence, bar height 0-1"),
    "agreement": ("fused vs branches, 0-1", "how far the pooled modalities back the fused label, 0-1 (orange: conflict, < 0.75)"),
    "engagement": ("from face geometry", "face geometry: head pose, gaze, eye openness (frames.parquet, 0-1, one line per face)"),
}
"""Each lane of the report: (a short and a full statement of what it was inferred from), shown
beside the lane in the HTML and the PNG."""

ENGAGEMENT_STEP = 1.0
"""seconds: engagement is averaged per face over steps this long, so a long video stays light."""


def _numbers(values, digits: int = 2) -> list:
    """A float column as a JSON list rounded to ``digits``, None where missing."""
    array = np.round(np.asarray(values, dtype=float), digits)
    return [None if np.isnan(v) else float(v) for v in array]


def _codes(values, names) -> list[int]:
    """Indices of ``values`` in ``names``; -1 where missing or unknown."""
    index = {n: i for i, n in enumerate(names)}
    return [index.get(v, -1) if isinstance(v, str) else -1 for v in values]


def _column(segments: pd.DataFrame, name: str, default=None) -> pd.Series:
    return segments[name] if name in segments else pd.Series([default] * len(segments), index=segments.index, dtype=object)


def engagement_series(frames: pd.DataFrame, *, step: float = ENGAGEMENT_STEP) -> dict:
    """Mean engagement per face over steps of ``step`` seconds.

    Returns:
        ``{"t": [step starts (s)], "faces": [face ids], "v": [[mean per step or None] per face]}``.
    """
    if not len(frames) or "engagement" not in frames:
        return {"t": [], "faces": [], "v": []}
    seen = frames[frames["face_present"].fillna(False).astype(bool) & frames["engagement"].notna()]
    if not len(seen):
        return {"t": [], "faces": [], "v": []}
    bins = (seen["time"] // step).astype(int)
    table = seen.groupby([bins, seen["face_id"]])["engagement"].mean().unstack()
    return {
        "t": _numbers(table.index.to_numpy() * step),
        "faces": [int(f) for f in table.columns],
        "v": [_numbers(table[f].to_numpy()) for f in table.columns],
    }


def recording(timeline: Timeline, name: str, summary: pd.DataFrame | None) -> dict:
    """The JSON-ready lanes of one timeline.

    Returns:
        ``name``, ``duration`` (s), ``pipeline``, ``speakers``, ``labels`` (:data:`EMOTIONS`),
        ``sentiments``, ``seg`` (column arrays per segment: ``s``, ``e`` (s), ``spk`` (index into
        speakers), ``txt``, ``voice``/``text``/``face``/``fused`` (index into labels, -1 absent) with
        ``voiceC``/``textC``/``faceC``/``conf`` (0-1), ``sent`` (index into sentiments), ``agr``,
        ``from``), ``spkFace`` (per speaker, its face track from ``speaker_face_id``, or None),
        ``words`` (``s``, ``e``, ``w``), ``eng`` (:func:`engagement_series`),
        ``present`` (lanes with any data), ``summary`` (whether a summary table came with it).
    """
    segments = timeline.segments.sort_values("start", kind="stable").reset_index(drop=True)
    words = timeline.words
    speakers = sorted({s for s in _column(segments, "speaker") if isinstance(s, str)})
    source = timeline.metadata.get("source") or {}
    ends = [source.get("duration") or 0.0, float(segments["end"].max()) if len(segments) else 0.0]
    if len(words):
        ends.append(float(words["end"].max()))
    if len(timeline.frames):
        ends.append(float(timeline.frames["time"].max()))
    seg = {
        "s": _numbers(segments["start"]), "e": _numbers(segments["end"]),
        "spk": _codes(_column(segments, "speaker"), speakers),
        "txt": [t if isinstance(t, str) else "" for t in _column(segments, "text", "")],
        "sent": _codes(_column(segments, "sentiment"), SENTIMENTS),
        "agr": _numbers(_column(segments, "agreement", np.nan)),
        "conf": _numbers(_column(segments, "confidence", np.nan)),
        "from": [f if isinstance(f, str) else "" for f in _column(segments, "fused_from", "")],
    }
    for key, prefix in (("voice", "audio_"), ("text", "text_"), ("face", "face_"), ("fused", "")):
        seg[key] = _codes(_column(segments, f"{prefix}label"), EMOTIONS)
        if prefix:
            seg[f"{key}C"] = _numbers(_column(segments, f"{prefix}confidence", np.nan))
    eng = engagement_series(timeline.frames)
    faces = {s: int(f) for s, f in zip(_column(segments, "speaker"), _column(segments, "speaker_face_id")) if isinstance(s, str) and pd.notna(f)}
    present = {
        "speakers": bool(speakers), "words": bool(len(words)),
        "voice": max(seg["voice"], default=-1) >= 0, "words' emotion": max(seg["text"], default=-1) >= 0,
        "face": max(seg["face"], default=-1) >= 0, "fused": max(seg["fused"], default=-1) >= 0,
        "confidence": any(v is not None for v in seg["conf"]), "agreement": any(v is not None for v in seg["agr"]),
        "engagement": bool(eng["faces"]),
    }
    return {
        "name": name,
        "duration": round(max(ends), 2),
        "pipeline": timeline.metadata.get("pipeline", "analyze"),
        "speakers": speakers,
        "spkFace": [faces.get(s) for s in speakers],
        "labels": list(EMOTIONS),
        "sentiments": list(SENTIMENTS),
        "seg": seg,
        "words": {"s": _numbers(words["start"]), "e": _numbers(words["end"]), "w": [str(w).strip() for w in words["word"]]} if len(words) else {"s": [], "e": [], "w": []},
        "eng": eng,
        "present": present,
        "summary": summary is not None,
    }
