"""Voice activity: where in the recording someone speaks, streamed block by block.

Silero VAD (the ONNX model shipped in the ``silero-vad`` wheel) gives a speech probability for
every 32 ms chunk; a hysteresis turns those into speech regions.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from .errors import ModelError
from .files import sha256_file
from .media import SAMPLE_RATE

CHUNK_SAMPLES = 512
"""samples per VAD decision (32 ms at 16 kHz), fixed by the model."""
CHUNK_SECONDS = CHUNK_SAMPLES / SAMPLE_RATE

SILERO_ONNX_SHA256 = "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3"


@dataclasses.dataclass(frozen=True)
class VadOptions:
    """Hysteresis settings; all times in seconds."""

    onset: float = 0.5
    """speech starts when the probability reaches this."""
    offset: float = 0.35
    """speech ends when the probability falls below this for ``min_silence``."""
    min_silence: float = 0.3
    min_speech: float = 0.25
    """shorter regions are dropped."""
    pad: float = 0.1
    """added to both ends of each region (clipped so regions never overlap)."""
    max_region: float = 28.0
    """a longer region is cut at its least speech-like chunk within its last 4 s."""

    def __post_init__(self):
        if not 0 < self.offset <= self.onset < 1:
            raise ValueError(f"VAD thresholds must satisfy 0 < offset <= onset < 1, not offset={self.offset}, onset={self.onset}")
        if not 4.0 < self.max_region <= 29.0:
            raise ValueError(f"max_region must be in (4, 29] s to fit a Whisper window, not {self.max_region}")


def load_silero_onnx():
    """Silero VAD's ONNX model from the installed wheel, its sha256 verified."""
    import silero_vad

    path = Path(silero_vad.__file__).parent / "data" / "silero_vad.onnx"
    if not path.is_file() or sha256_file(path) != SILERO_ONNX_SHA256:
        raise ModelError(f"{path}: missing or sha256 differs from {SILERO_ONNX_SHA256}; reinstall silero-vad")
    return silero_vad.load_silero_vad(onnx=True)


class SpeechDetector:
    """Push 16 kHz mono audio blocks in; get speech regions ``(start, end)`` in seconds out.

    Regions come out in order, each as soon as it has ended (``min_silence`` after its end).
    """

    def __init__(self, options: VadOptions = VadOptions(), *, model=None):
        self.options = options
        self.model = model if model is not None else load_silero_onnx()
        self.reset()

    def reset(self) -> None:
        self.model.reset_states()
        self._carry = np.zeros(0, dtype=np.float32)
        self._index = 0  # chunks seen
        self._start: int | None = None  # chunk where the open region began
        self._silent_since: int | None = None
        self._recent: collections.deque[float] = collections.deque(maxlen=int(4.0 / CHUNK_SECONDS))
        self._previous_end = 0.0

    def push(self, samples: np.ndarray) -> list[tuple[float, float]]:
        """Feed the next samples, shape ``(n,)``; returns the regions that ended within them."""
        samples = np.concatenate([self._carry, np.asarray(samples, dtype=np.float32)])
        n_chunks = len(samples) // CHUNK_SAMPLES
        self._carry = samples[n_chunks * CHUNK_SAMPLES :]
        regions = []
        for i in range(n_chunks):
            chunk = torch.from_numpy(samples[i * CHUNK_SAMPLES : (i + 1) * CHUNK_SAMPLES])
            regions += self._step(float(self.model(chunk, SAMPLE_RATE)))
        return regions

    def flush(self) -> list[tuple[float, float]]:
        """End of the stream: the region still open, if any."""
        regions = []
        if len(self._carry):
            last = np.pad(self._carry, (0, CHUNK_SAMPLES - len(self._carry)))
            self._carry = np.zeros(0, dtype=np.float32)
            regions += self._step(float(self.model(torch.from_numpy(last), SAMPLE_RATE)))
        return regions + self._end()

    def regions(self, blocks: Iterable[np.ndarray]) -> Iterator[tuple[float, float]]:
        """All speech regions of a stream of mono blocks."""
        self.reset()
        for block in blocks:
            yield from self.push(block)
        yield from self.flush()

    def extent(self, samples: np.ndarray) -> tuple[float, float] | None:
        """Seconds from the start of the first speech region of a whole clip, shape ``(n,)``, to the
        end of its last (clipped to the clip); None when it holds no speech."""
        return _extent(list(self.regions([samples])), len(samples))

    def extents(self, clips: Sequence[np.ndarray]) -> list[tuple[float, float] | None]:
        """:meth:`extent` of each of several whole clips, their chunks read side by side: one model
        call per chunk position for all the clips (a batch row is read on its own)."""
        n_chunks = [-(-len(clip) // CHUNK_SAMPLES) for clip in clips]
        chunks = np.zeros((len(clips), max(n_chunks, default=0), CHUNK_SAMPLES), dtype=np.float32)
        for row, clip in zip(chunks, clips):
            row.reshape(-1)[: len(clip)] = clip  # the last chunk zero-padded, as flush() pads it
        self.model.reset_states(len(clips))
        probabilities = [self.model(torch.from_numpy(np.ascontiguousarray(chunks[:, t])), SAMPLE_RATE)[:, 0] for t in range(chunks.shape[1])]
        probabilities = torch.stack(probabilities, dim=1).tolist() if probabilities else [[] for _ in clips]
        extents = []
        for clip, p, n in zip(clips, probabilities, n_chunks, strict=True):
            self.reset()
            found = [region for q in p[:n] for region in self._step(q)] + self._end()
            extents.append(_extent(found, len(clip)))
        self.reset()
        return extents

    def _end(self) -> list[tuple[float, float]]:
        """The region still open, closed where its silence began (or at the last chunk)."""
        if self._start is None:
            return []
        end = self._silent_since if self._silent_since is not None else self._index
        start, self._start = self._start, None
        return self._close(start, end)

    def _step(self, p: float) -> list[tuple[float, float]]:
        o, index = self.options, self._index
        self._index += 1
        if self._start is None:
            if p >= o.onset:
                self._start, self._silent_since = index, None
                self._recent.clear()
                self._recent.append(p)
            return []
        self._recent.append(p)
        if p < o.offset:
            self._silent_since = index if self._silent_since is None else self._silent_since
            if (index - self._silent_since + 1) * CHUNK_SECONDS >= o.min_silence:
                start, self._start = self._start, None
                return self._close(start, self._silent_since)
        else:
            self._silent_since = None
        if (index - self._start + 1) * CHUNK_SECONDS >= o.max_region:
            recent = list(self._recent)
            cut = index - len(recent) + 1 + int(np.argmin(recent))
            start, self._start, self._silent_since = self._start, cut, None
            self._recent = collections.deque(recent[cut - index - 1 :], maxlen=self._recent.maxlen)
            return self._close(start, cut)
        return []

    def _close(self, start_chunk: int, end_chunk: int) -> list[tuple[float, float]]:
        o = self.options
        start, end = start_chunk * CHUNK_SECONDS, end_chunk * CHUNK_SECONDS
        if end - start < o.min_speech:
            return []
        start, end = max(start - o.pad, self._previous_end), end + o.pad
        self._previous_end = end
        return [(start, end)]


def _extent(regions: list[tuple[float, float]], n_samples: int) -> tuple[float, float] | None:
    """From the first region's start to the last one's end, clipped to a clip of ``n_samples``; None without regions."""
    if not regions:
        return None
    return max(regions[0][0], 0.0), min(regions[-1][1], n_samples / SAMPLE_RATE)
