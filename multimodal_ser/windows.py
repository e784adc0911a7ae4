"""Group speech regions into encoder windows of at most 30 s, keeping only the audio they need.

Regions come from voice activity (:class:`~multimodal_ser.vad.SpeechDetector`) or from a
transcript the user already has (:class:`KnownRegions`); both are pushed the same audio blocks.
Memory holds one window of audio plus the stretch a region still open may need, whatever the
recording's length.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

import numpy as np

from .encoder import WINDOW_SECONDS
from .media import SAMPLE_RATE


@dataclasses.dataclass(frozen=True)
class AudioWindow:
    """Up to 30 s of mono audio that starts at ``offset`` s and holds the ``regions`` inside it."""

    offset: float
    """seconds on the recording's clock."""
    audio: np.ndarray
    """shape ``(n_samples,)`` float32 at 16 kHz."""
    regions: tuple[tuple[float, float], ...]
    """``(start, end)`` seconds on the recording's clock, in order; the last may run past the
    audio where the recording ends early."""


class RegionSource(Protocol):
    """Anything that turns pushed audio into completed regions: the VAD or a known transcript."""

    def push(self, samples: np.ndarray) -> list[tuple[float, float]]: ...

    def flush(self) -> list[tuple[float, float]]: ...


class KnownRegions:
    """Regions known in advance (a transcript), released as the audio reaches their end.

    Args:
        regions: ``(start, end)`` seconds, sorted by start; each at most ``max_region`` s long
            (split longer ones before).
    """

    def __init__(self, regions: Sequence[tuple[float, float]]):
        self._regions = list(regions)
        self._next = 0
        self._seconds = 0.0

    def push(self, samples: np.ndarray) -> list[tuple[float, float]]:
        self._seconds += len(samples) / SAMPLE_RATE
        done = self._next
        while done < len(self._regions) and self._regions[done][1] <= self._seconds:
            done += 1
        ready, self._next = self._regions[self._next : done], done
        return ready

    def flush(self) -> list[tuple[float, float]]:
        ready, self._next = self._regions[self._next :], len(self._regions)
        return ready


class _RollingAudio:
    """Samples from ``start`` (in samples) to the end of what was appended."""

    def __init__(self):
        self.start = 0
        self._blocks: list[np.ndarray] = []
        self.end = 0

    def append(self, block: np.ndarray) -> None:
        self._blocks.append(block)
        self.end += len(block)

    def drop_before(self, sample: int) -> None:
        sample = min(max(sample, self.start), self.end)
        joined = np.concatenate(self._blocks) if self._blocks else np.zeros(0, dtype=np.float32)
        self._blocks = [joined[sample - self.start :]]
        self.start = sample

    def slice(self, first: int, last: int) -> np.ndarray:
        joined = np.concatenate(self._blocks) if self._blocks else np.zeros(0, dtype=np.float32)
        self._blocks = [joined]
        first, last = max(first, self.start), min(last, self.end)
        return joined[first - self.start : max(last, first) - self.start].copy()


def windows(blocks: Iterable[np.ndarray], source: RegionSource, *, max_seconds: float = WINDOW_SECONDS) -> Iterator[AudioWindow]:
    """Stream mono blocks (each shape ``(n,)``) through ``source`` and yield windows of its regions.

    Consecutive regions share a window while the window spans at most ``max_seconds`` from the
    first region's start to the last one's end.
    """
    audio = _RollingAudio()
    group: list[tuple[float, float]] = []
    keep = int((max_seconds + 2.0) * SAMPLE_RATE)  # the most an open region can reach back

    def emit() -> AudioWindow:
        first = int(round(group[0][0] * SAMPLE_RATE))
        last = min(int(round(group[-1][1] * SAMPLE_RATE)), first + int(max_seconds * SAMPLE_RATE))
        return AudioWindow(offset=first / SAMPLE_RATE, audio=audio.slice(first, last), regions=tuple(group))

    for block in blocks:
        audio.append(np.asarray(block, dtype=np.float32))
        for region in source.push(block):
            if group and region[1] - group[0][0] > max_seconds:
                yield emit()
                group = []
            group.append(region)
        now = audio.end / SAMPLE_RATE
        if group and now - group[0][0] > max_seconds + 1.0:
            yield emit()  # nothing that ends from now on fits this window any more
            group = []
        oldest_needed = int(group[0][0] * SAMPLE_RATE) if group else audio.end - keep
        audio.drop_before(min(oldest_needed, audio.end - keep))
    for region in source.flush():
        if group and region[1] - group[0][0] > max_seconds:
            yield emit()
            group = []
        group.append(region)
    if group:
        yield emit()
