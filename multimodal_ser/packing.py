"""Several short clips laid end to end in one 30-s encoder window, with silence between them.

The voice head's training features are read from such windows
(:mod:`multimodal_ser.training.audio.corpus`): one encoder pass serves about ten clips of 2 s
instead of one. Each clip's states then also attend to its neighbours; analysis and evaluation
read a clip alone instead (:meth:`multimodal_ser.encoder.SpeechEncoder.encode_alone`).
"""

from __future__ import annotations

from collections.abc import Sequence

from .encoder import WINDOW_SAMPLES
from .media import SAMPLE_RATE

CONTEXT_SECONDS = 0.3
"""seconds of the clip's own audio kept on each side of its speech inside the window."""
GAP_SECONDS = 0.5
"""seconds of digital silence between two clips packed into one window."""
GAP_SAMPLES = int(GAP_SECONDS * SAMPLE_RATE)


def pack(lengths: Sequence[int], *, gap: int = GAP_SAMPLES, capacity: int = WINDOW_SAMPLES) -> list[list[tuple[int, int]]]:
    """Lay pieces end to end, in the given order, ``gap`` samples apart, into windows of at most ``capacity`` samples.

    Args:
        lengths: samples of each piece, shape ``(n,)``.
        gap: samples of silence after each piece.
        capacity: samples a window holds (a piece that does not fit what is left opens the next window).

    Returns:
        One list per window of ``(piece position in lengths, window sample where the piece starts)``;
        every piece appears exactly once, whole, and the pieces keep their order.

    Raises:
        ValueError: a piece is longer than ``capacity``.
    """
    windows: list[list[tuple[int, int]]] = []
    current: list[tuple[int, int]] = []
    cursor = 0
    for k, length in enumerate(lengths):
        if length > capacity:
            raise ValueError(f"piece {k}: {length / SAMPLE_RATE:.1f} s do not fit a window of {capacity / SAMPLE_RATE:.1f} s")
        if current and cursor + length > capacity:
            windows.append(current)
            current, cursor = [], 0
        current.append((k, cursor))
        cursor += length + gap
    if current:
        windows.append(current)
    return windows
