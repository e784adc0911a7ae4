"""Short items of ``mser evaluate`` encoded several to one window (:func:`multimodal_ser.packing.pack`).

Each clip is brought to the speech level on its own, as it would be alone in its window, cut to
its voice-activity span plus :data:`~multimodal_ser.packing.CONTEXT_SECONDS` of its own audio on
each side, and placed :data:`~multimodal_ser.packing.GAP_SECONDS` after the previous clip. The
window is encoded once, without a second level normalisation. A clip's voice features are read
over its speech span, as alone; its transcript is the ASR words whose middle falls nearest its
stretch of the window. The language, when not given, is detected once per window.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..encoder import FRAMES_PER_SECOND
from ..media import SAMPLE_RATE
from ..packing import CONTEXT_SECONDS, pack
from ..registry import Models

if TYPE_CHECKING:
    from ..asr import AsrSegment

FRAME_SAMPLES = SAMPLE_RATE // FRAMES_PER_SECOND
"""samples per encoder frame (320: 20 ms)."""
MAX_PACKED_SECONDS = 8.0
"""Items of at most this many seconds of audio are packed; longer ones keep a window of their own."""


@dataclasses.dataclass(frozen=True)
class Clip:
    """One short item's audio, ready to be packed."""

    samples: np.ndarray
    """shape ``(n_samples,)`` float32 at 16 kHz, already level-normalised if the encoder normalises."""
    speech: tuple[float, float]
    """seconds from ``samples[0]``: the first to the last voice-activity region (all of it if none)."""
    want_features: bool
    want_asr: bool

    def cut(self) -> tuple[int, int]:
        """``(first, last)`` samples of the clip that go into the window: its speech plus context,
        ``first`` on an encoder frame boundary (so the clip's frames fall as they fall alone)."""
        context = int(CONTEXT_SECONDS * SAMPLE_RATE)
        first = max(int(round(self.speech[0] * SAMPLE_RATE)) - context, 0) // FRAME_SAMPLES * FRAME_SAMPLES
        last = min(int(round(self.speech[1] * SAMPLE_RATE)) + context, len(self.samples))
        return first, last


@dataclasses.dataclass(frozen=True)
class ClipResult:
    """What one packed pass gave for one clip."""

    features: np.ndarray | None
    """shape ``(F,)`` float32: :func:`multimodal_ser.voice.segment_features` of its speech span (None: not wanted)."""
    seconds: float
    """seconds of the span the features were read over."""
    transcript: str | None
    """its ASR words (None: not wanted)."""


def _owners(segments: list[AsrSegment], stretches: list[tuple[float, float]]) -> list[list[str]]:
    """The words of ``segments`` (or a segment's text when it has no timed words), per stretch
    ``(start, end)`` (window seconds) whose span lies nearest each word's middle, in order."""
    texts: list[list[str]] = [[] for _ in stretches]
    for segment in segments:
        units = [(w.word, w.start, w.end) for w in segment.words] or [(" " + segment.text.strip(), segment.start, segment.end)]
        for text, start, end in units:
            middle = (start + end) / 2
            distance = [max(a - middle, middle - b, 0.0) for a, b in stretches]
            texts[int(np.argmin(distance))].append(text)
    return texts


def packed_passes(models: Models, clips: Sequence[Clip]) -> list[ClipResult]:
    """Encode ``clips``, packed in their order into as few windows as fit, and read each clip's results.

    Returns:
        One :class:`ClipResult` per clip, in the order of ``clips``.
    """
    from ..voice import segment_features, segment_span

    encoder = models.encoder()
    cuts = [clip.cut() for clip in clips]
    results: list[ClipResult] = []
    # whole frames per piece: every piece then starts on a frame boundary, as alone
    for layout in pack([-(-(last - first) // FRAME_SAMPLES) * FRAME_SAMPLES for first, last in cuts]):
        (k_last, at_last) = layout[-1]
        audio = np.zeros(at_last + cuts[k_last][1] - cuts[k_last][0], dtype=np.float32)
        for k, at in layout:
            first, last = cuts[k]
            audio[at : at + last - first] = clips[k].samples[first:last]
        encoded = encoder.encode(audio, normalise=False)
        transcripts: list[str | None] = [None] * len(layout)
        if any(clips[k].want_asr for k, _ in layout):
            transcriber = models.transcriber()
            transcriber.new_recording()  # each window's language is its own
            stretches = [(at / SAMPLE_RATE, (at + cuts[k][1] - cuts[k][0]) / SAMPLE_RATE) for k, at in layout]
            words = _owners(transcriber.transcribe(encoded), stretches)
            transcripts = ["".join(w).strip() if clips[k].want_asr else None for w, (k, _) in zip(words, layout)]
        for (k, at), transcript in zip(layout, transcripts):
            shift = (at - cuts[k][0]) / SAMPLE_RATE  # window seconds of the clip's sample 0
            start, end, _ = segment_span(encoded, clips[k].speech[0] + shift, clips[k].speech[1] + shift)
            features = segment_features(encoded, start, end) if clips[k].want_features else None
            results.append(ClipResult(features, end - start, transcript))
    return results
