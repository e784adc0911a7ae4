"""Speech segments as the stream finds them, and their place on the recording's segment grid.

A :class:`SpeechSegment` is an ASR segment (its words kept inside the speech regions) or a
transcript cue; the voice outputs of its pieces are pooled by duration; :func:`segment_grid` lays
the segments, and fixed windows over the silent stretches between them, on one grid.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from .grid import make_grid
from .timeline import WORD_COLUMNS
from .transcript import TranscriptSegment


@dataclasses.dataclass
class SpeechSegment:
    """A stretch of speech found while streaming, before it takes its place on the grid."""

    start: float
    end: float
    speaker: str | None
    text: str
    words: list = dataclasses.field(default_factory=list)
    voice: dict | None = None
    """audio-branch outputs for this segment: emotions (7,), arousal, valence, embedding (d,)."""


def voice_row(prediction, i: int, keep_features: bool = False) -> dict:
    """Row ``i`` of a voice prediction as one segment piece's outputs (:attr:`SpeechSegment.voice`),
    with the features the head read when ``keep_features``."""
    row = {
        "emotions": prediction.emotions[i],
        "arousal": float(prediction.arousal[i]),
        "valence": float(prediction.valence[i]),
        "embedding": prediction.embeddings[i],
    }
    if keep_features:
        row["features"] = prediction.features[i]
    return row


def weighted_voice(parts: list[tuple[float, dict]]) -> dict:
    """Duration-weighted mean of the voice outputs of the pieces of one long segment."""
    weights = np.array([w for w, _ in parts])
    weights /= weights.sum()
    return {key: sum(w * np.asarray(out[key]) for w, (_, out) in zip(weights, parts)) for key in parts[0][1]}


MAX_PIECE_SECONDS = 28.0
"""seconds: transcript segments longer than this are encoded in pieces."""


def split_long(known: list[TranscriptSegment]) -> tuple[list[tuple[float, float]], list[int]]:
    """Transcript segments as encoder regions of at most :data:`MAX_PIECE_SECONDS` s, with each piece's
    segment index. Only segments that fit one piece get word timings."""
    pieces, parents = [], []
    for index, s in enumerate(known):
        n = int(np.ceil((s.end - s.start) / MAX_PIECE_SECONDS))
        edges = np.linspace(s.start, s.end, n + 1)
        pieces += [(float(a), float(b)) for a, b in zip(edges[:-1], edges[1:])]
        parents += [index] * n
    return pieces, parents


def recognised(segment, regions) -> SpeechSegment:
    """An ASR segment with its words kept inside the speech regions and its times following them."""
    words = clip_words(segment.words, regions)
    start, end = (words[0].start, words[-1].end) if words else (segment.start, segment.end)
    return SpeechSegment(start, max(end, start + 0.02), None, segment.text, words=words)


def clip_words(words, regions) -> list:
    """Keep each word inside the speech region it overlaps most (Whisper stretches words over pauses)."""
    clipped = []
    for w in words:
        overlaps = [min(w.end, e) - max(w.start, s) for s, e in regions]
        best = int(np.argmax(overlaps)) if regions else None
        if best is None or overlaps[best] <= 0:
            clipped.append(w)
            continue
        s, e = regions[best]
        start = min(max(w.start, s), e)
        clipped.append(dataclasses.replace(w, start=round(start, 3), end=round(max(min(w.end, e), start), 3)))
    return clipped


def segment_grid(speech: list[SpeechSegment], duration: float, gap_window: float) -> tuple[pd.DataFrame, np.ndarray]:
    """The segment grid: speech segments plus fixed windows over silent stretches of 0.5 s or more
    (a recording without speech has at least one row, however short).

    Returns the grid (with a ``speech`` column) and, for each speech segment, its grid row.
    """
    spans = [(s.start, s.end, s.speaker, s.text, i) for i, s in enumerate(speech)]
    cursor = 0.0
    for s in sorted(speech, key=lambda s: s.start) + [None]:
        stop = duration if s is None else s.start
        if stop - cursor >= 0.5 or (not spans and s is None and stop > cursor):  # a recording shorter than 0.5 s is one row
            edges = np.linspace(cursor, stop, int(np.ceil((stop - cursor) / gap_window)) + 1)
            spans += [(float(a), float(b), None, "", None) for a, b in zip(edges[:-1], edges[1:])]
        if s is not None:
            cursor = max(cursor, s.end)
    spans.sort(key=lambda span: span[0])
    grid = make_grid([s[0] for s in spans], [s[1] for s in spans], speakers=[s[2] for s in spans], texts=[s[3] for s in spans])
    grid["speech"] = [s[4] is not None for s in spans]
    rows = np.empty(len(speech), dtype=np.int64)
    for row, span in enumerate(spans):
        if span[4] is not None:
            rows[span[4]] = row
    return grid, rows


def words_table(speech: list[SpeechSegment], rows: np.ndarray, grid: pd.DataFrame) -> pd.DataFrame:
    records = [
        {"word": w.word.strip(), "start": w.start, "end": w.end, "probability": w.probability, "segment_id": int(grid.at[row, "segment_id"]), "speaker": s.speaker}
        for s, row in zip(speech, rows)
        for w in s.words
    ]
    words = pd.DataFrame.from_records(records, columns=list(WORD_COLUMNS))
    return words.astype({"start": "float64", "end": "float64", "probability": "float64", "segment_id": "int64"})
