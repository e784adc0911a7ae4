"""Conversations assembled from single-speaker clips, with their true turns, and the diarisation
error rate (pyannote.metrics) of found turns against them."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ..media import SAMPLE_RATE, load_audio

Turns = Sequence[tuple[float, float, str]]
"""``(start, end, speaker)`` per turn, seconds."""


@dataclasses.dataclass(frozen=True)
class Conversation:
    audio: np.ndarray
    """16 kHz mono, shape ``(n,)``, float32."""
    turns: list[tuple[float, float, str]]
    """the true turns: each clip's speech extent and its speaker (turns may overlap)."""


def speech_extent(clip: np.ndarray, *, relative_threshold: float = 0.05) -> np.ndarray:
    """``clip`` (shape ``(n,)``) cut to its first and last sample above ``relative_threshold`` × its peak."""
    loud = np.flatnonzero(np.abs(clip) > relative_threshold * np.abs(clip).max())
    return clip[loud[0] : loud[-1] + 1] if len(loud) else clip[:0]


def build_conversation(
    clips: Mapping[str, Sequence[str]],
    *,
    n_speakers: int,
    n_turns: int,
    rng: np.random.Generator,
    clips_per_turn: tuple[int, int] = (1, 3),
    pause_s: tuple[float, float] = (0.2, 0.8),
    overlap_share: float = 0.2,
    overlap_s: tuple[float, float] = (0.2, 0.6),
) -> Conversation:
    """A mono conversation of ``n_speakers`` people drawn from ``clips`` taking ``n_turns`` turns.

    Each turn is a different speaker from the one before, saying 1 to 3 of their clips (speech
    extents, joined by 0.1 s pauses) at a level within ±3 dB of the others; it starts after a pause
    (uniform in ``pause_s``) or, for a share ``overlap_share`` of turns, before the previous turn
    has ended (overlap uniform in ``overlap_s``).

    Args:
        clips: audio file paths per speaker (16 kHz or any rate: decoded to 16 kHz mono).
        rng: the only source of randomness (seed it to reproduce).
    """
    if len(clips) < n_speakers:
        raise ValueError(f"need clips of {n_speakers} speakers, got {len(clips)}")
    speakers = list(rng.choice(sorted(clips), size=n_speakers, replace=False))
    pieces: list[tuple[int, np.ndarray]] = []
    turns: list[tuple[float, float, str]] = []
    cursor, previous = 0.5, None
    for _ in range(n_turns):
        speaker = str(rng.choice([s for s in speakers if s != previous]))
        count = int(rng.integers(clips_per_turn[0], clips_per_turn[1] + 1))
        chosen = rng.choice(len(clips[speaker]), size=min(count, len(clips[speaker])), replace=False)
        parts = []
        for i in chosen:
            speech = speech_extent(load_audio(clips[speaker][i]))
            parts += [speech / max(np.sqrt(np.mean(speech**2)), 1e-6) * 0.05 * 10 ** (rng.uniform(-3, 3) / 20), np.zeros(int(0.1 * SAMPLE_RATE))]
        turn = np.concatenate(parts[:-1]).astype(np.float32)
        if turns and rng.random() < overlap_share:
            start = max(turns[-1][0] + 0.5, cursor - rng.uniform(*overlap_s))
        else:
            start = cursor + rng.uniform(*pause_s)
        first = round(start * SAMPLE_RATE)
        pieces.append((first, turn))
        turns.append((first / SAMPLE_RATE, (first + len(turn)) / SAMPLE_RATE, speaker))
        cursor, previous = max(cursor, turns[-1][1]), speaker
    audio = np.zeros(round((cursor + 0.5) * SAMPLE_RATE), dtype=np.float32)
    for first, turn in pieces:
        audio[first : first + len(turn)] += turn
    return Conversation(audio=audio, turns=turns)


def diarisation_error(pairs: Iterable[tuple[Turns, Turns]], *, collar: float = 0.25) -> dict:
    """Diarisation error rate over ``(reference, hypothesis)`` turn lists, with pyannote.metrics.

    Speaker names need not match: the optimal mapping is found per pair. ``collar`` seconds around
    each reference boundary are not scored (0.25 s: ±0.125 s); overlapping speech is scored.

    Returns:
        ``{"der", "missed", "false_alarm", "confusion"}`` as fractions of the reference speech, and
        ``"total"`` (seconds of reference speech scored), ``"n"`` (pairs).
    """
    from pyannote.core import Annotation, Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    def annotation(found: Turns) -> Annotation:
        out = Annotation()
        for i, (start, end, speaker) in enumerate(found):
            out[Segment(start, end), i] = speaker
        return out

    metric = DiarizationErrorRate(collar=collar, skip_overlap=False)
    n = 0
    for reference, hypothesis in pairs:
        extent = [t for turn in (*reference, *hypothesis) for t in turn[:2]]
        metric(annotation(reference), annotation(hypothesis), uem=Timeline([Segment(min(extent), max(extent))]))
        n += 1
    total = metric["total"]
    return {
        "der": abs(metric),
        "missed": metric["missed detection"] / total,
        "false_alarm": metric["false alarm"] / total,
        "confusion": metric["confusion"] / total,
        "total": total,
        "n": n,
    }
