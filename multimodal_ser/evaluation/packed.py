"""Short items of ``mser evaluate`` encoded several at a time, nearly as each would be alone.

Each clip, brought to the speech level on its own, is encoded whole by
:meth:`~multimodal_ser.encoder.SpeechEncoder.encode_alone`: as if alone in a zero-padded window,
with the padding's share of the attention kept by a fraction of its frames, and most clips
borrowing the padding states of a few clips of like length, several clips per batch. Its voice features are read over its speech span, as alone; its transcript is decoded from
the same pass, each in its own language (the option, else detected on it), several at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence

import numpy as np

from ..registry import Models
from .items import Transcript


@dataclasses.dataclass(frozen=True)
class Clip:
    """One short item's audio, ready to be encoded with others."""

    samples: np.ndarray
    """shape ``(n_samples,)`` float32 at 16 kHz, already level-normalised if the encoder normalises."""
    speech: tuple[float, float]
    """seconds from ``samples[0]``: the first to the last voice-activity region (all of it if none)."""
    want_features: bool
    want_asr: bool


@dataclasses.dataclass(frozen=True)
class ClipResult:
    """What the shared passes gave for one clip."""

    features: np.ndarray | None
    """shape ``(F,)`` float32: :func:`multimodal_ser.voice.segment_features` of its speech span (None: not wanted)."""
    seconds: float
    """seconds of the span the features were read over (0 when not wanted)."""
    transcript: Transcript | None
    """its ASR text and the language it was decoded in (None: not wanted)."""


def packed_passes(models: Models, clips: Sequence[Clip], *, only: Collection[str] | None = None) -> list[ClipResult]:
    """The voice features and transcripts of ``clips``, encoded several at a time (with ``only``,
    the words of clips in those languages only; see :meth:`~multimodal_ser.asr.Transcriber.transcribe_many`).

    Returns:
        One :class:`ClipResult` per clip, in the order of ``clips``.
    """
    from ..voice import segment_features, segment_span

    wanted = [k for k, clip in enumerate(clips) if clip.want_features or clip.want_asr]
    encoded = dict(zip(wanted, models.encoder().encode_alone([clips[k].samples for k in wanted]), strict=True))
    heard = [k for k in wanted if clips[k].want_asr]
    transcripts = {
        k: Transcript(" ".join(t for t in (s.text.strip() for s in segments) if t), language)
        for k, (language, segments) in zip(heard, models.transcriber().transcribe_many([encoded[k] for k in heard], only=only), strict=True)
    }
    results = []
    for k, clip in enumerate(clips):
        features, seconds = None, 0.0
        if clip.want_features:
            start, end, _ = segment_span(encoded[k], *clip.speech)
            features, seconds = segment_features(encoded[k], start, end), end - start
        results.append(ClipResult(features, seconds, transcripts.get(k) if clip.want_asr else None))
    return results
