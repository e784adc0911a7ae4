"""The labelled speech the voice head learns from, and how its clips are laid out for the encoder.

Three corpora are read from the data folder (:data:`CORPORA`): RAVDESS (English, acted, 8
classes), TurEV-DB (Turkish, acted single words, 4 classes) and URDU (Urdu talk-show speech,
natural, 4 classes). A corpus's *label space* is the set of classes that occur in it; a clip says
nothing about the classes its corpus never uses (:func:`label_sets`).

Each clip is reduced to its speech (energy trim, :data:`TRIM_TOP_DB`) plus :data:`CONTEXT_SECONDS`
of its own surrounding audio, and several clips of the SAME speaker, in a seeded random order, are
packed into one window of at most 30 s, separated by :data:`GAP_SECONDS` of digital silence: like
an inference window that holds several utterances of one speaker (:func:`pack_windows`). A short
file on its own is encoded differently, alone in a window padded with silence, its segment from the
voice-activity detector (:func:`isolated_windows`): how ``mser analyze`` and ``mser evaluate`` see it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import librosa
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ...errors import ManifestError
from ...evaluation.datasets import ravdess_manifest, turev_manifest, urdu_manifest
from ...labels import RAVDESS_8
from ...media import SAMPLE_RATE, load_audio
from ...packing import CONTEXT_SECONDS, GAP_SECONDS, pack
from .conditions import ISOLATED, NOISE_KINDS, Condition, transform_clip

TRIM_TOP_DB = 40.0
"""dB below a clip's peak frame that counts as silence when locating its speech."""
SEGMENT_PAD_SECONDS = 0.1
"""seconds added on each side of the speech span to make the segment (a VAD-like margin)."""
BABBLE_TALKERS = 5
"""utterances (of speakers other than the clip's) summed into babble noise."""
ISOLATED_SHARE: dict[str, float] = {"ravdess": 0.15, "turev-db": 0.12, "urdu": 0.6}
"""Share of each corpus's clips (drawn per speaker and label, seeded) also encoded alone in a window;
1 for a corpus not named. An isolated clip costs a whole encoder pass, a packed one about a tenth."""
NEUTRAL_LIKE: tuple[str, ...] = ("neutral", "calm")
"""RAVDESS tells these apart; a corpus that has only one of them means both by it."""


@dataclasses.dataclass(frozen=True)
class SpeechCorpus:
    """A labelled speech corpus the voice head can be trained on."""

    name: str
    folder: str
    """its folder under the data directory."""
    read: Callable[[Path], pd.DataFrame]
    """builds its manifest (with ``label8``, ``group``, ``sex``) from that folder."""
    licence: str


CORPORA: dict[str, SpeechCorpus] = {
    c.name: c
    for c in (
        SpeechCorpus("ravdess", "ravdess-speech-16k", ravdess_manifest,
                     "RAVDESS (Livingstone & Russo 2018), CC BY-NC-SA 4.0"),
        SpeechCorpus("turev-db", "turev-db-16k", turev_manifest,
                     "TurEV-DB (Canpolat et al. 2020), CC BY-NC-ND 4.0 per its README (GPL-3.0 per its LICENSE file): research use"),
        SpeechCorpus("urdu", "urdu-16k", urdu_manifest, "URDU (Latif et al. 2018), research use only (its README)"),
    )
}


def corpus_folders(data_dir: str | os.PathLike, corpora: Sequence[str] | None = None) -> dict[str, Path]:
    """``{corpus name: its folder}`` under the data folder ``data_dir``: the named ``corpora``, or
    every one of :data:`CORPORA` found there when None.

    Raises:
        ManifestError: a named corpus is unknown or missing, or none is found.
    """
    data_dir = Path(data_dir)
    for name in corpora or ():
        if name not in CORPORA:
            raise ManifestError(f"unknown corpus {name!r}; known: {sorted(CORPORA)}")
        if not (data_dir / CORPORA[name].folder).is_dir():
            raise ManifestError(f"{data_dir / CORPORA[name].folder}: corpus {name} not found under {data_dir}")
    names = corpora if corpora is not None else [n for n, c in CORPORA.items() if (data_dir / c.folder).is_dir()]
    if not names:
        raise ManifestError(f"{data_dir}: none of the corpus folders {[c.folder for c in CORPORA.values()]} found")
    return {name: data_dir / CORPORA[name].folder for name in names}


def training_manifest(folders: Mapping[str, str | os.PathLike]) -> pd.DataFrame:
    """The union of the corpora ``{name: folder}`` (see :func:`corpus_folders`): one row per clip.

    Columns ``path``, ``label8`` (a :data:`~multimodal_ser.labels.RAVDESS_8` name), ``corpus``,
    ``speaker`` (``"<corpus>:<group>"``, unique across corpora), ``sex`` (male, female or None).
    """
    parts = []
    for name, folder in folders.items():
        table = CORPORA[name].read(Path(folder))
        parts.append(
            pd.DataFrame({"path": table["path"], "label8": table["label8"], "corpus": name,
                          "speaker": name + ":" + table["group"].astype(str), "sex": table["sex"]})
        )
    return pd.concat(parts, ignore_index=True)


def label_sets(label8: Sequence[str], corpus: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """What each clip's label says, as sets over :data:`~multimodal_ser.labels.RAVDESS_8`.

    Returns:
        ``(targets, allowed)``, both shape ``(n, 8)`` bool. ``targets``: the classes the label
        stands for (its own, plus the other of :data:`NEUTRAL_LIKE` when the corpus lacks it).
        ``allowed``: the classes the clip's corpus can name at all (the union of its targets); the
        training loss compares only these, so a four-class corpus never teaches the head that
        fearful, disgust or surprised are absent.
    """
    label8 = np.asarray(label8, dtype=object)
    corpus = np.asarray(corpus, dtype=object)
    targets = np.zeros((len(label8), len(RAVDESS_8)), dtype=bool)
    allowed = np.zeros_like(targets)
    for name in np.unique(corpus):
        rows = corpus == name
        present = set(label8[rows])
        unknown = present - set(RAVDESS_8)
        if unknown:
            raise ValueError(f"corpus {name}: labels {sorted(unknown)} are not RAVDESS-8 names {RAVDESS_8}")
        for label in present:
            stands_for = {label}
            if label in NEUTRAL_LIKE and not set(NEUTRAL_LIKE) <= present:
                stands_for |= set(NEUTRAL_LIKE)
            columns = [RAVDESS_8.index(c) for c in stands_for]
            targets[np.ix_(rows & (label8 == label), columns)] = True
        allowed[rows] = targets[rows].any(axis=0)
    return targets, allowed


@dataclasses.dataclass(frozen=True)
class Corpus:
    """The labelled clips, decoded once: what packing, noise and feature extraction read."""

    manifest: pd.DataFrame
    """one row per clip, with ``path``, ``label8``, ``corpus`` and ``speaker`` (see :func:`training_manifest`)."""
    audios: tuple[np.ndarray, ...]
    """each clip's samples, shape ``(n_samples,)`` float32 at 16 kHz."""
    speech: tuple[tuple[int, int], ...]
    """each clip's speech span ``(first, last)`` in samples (:func:`speech_span`)."""

    @classmethod
    def load(cls, manifest: pd.DataFrame) -> Corpus:
        """Decode every clip of ``manifest`` (a :func:`training_manifest`, or a RAVDESS manifest,
        whose ``group`` then names the speaker)."""
        manifest = manifest.reset_index(drop=True)
        if "speaker" not in manifest:
            manifest = manifest.assign(
                corpus=manifest.get("corpus", "ravdess"), speaker=lambda t: t["corpus"] + ":" + t["group"].astype(str)
            )
        audios = tuple(load_audio(p) for p in tqdm(manifest["path"], desc="decoding clips", unit="clip"))
        return cls(manifest, audios, tuple(speech_span(a) for a in audios))

    def transformed(self, condition: Condition) -> Corpus:
        """The corpus with every clip changed as ``condition`` says (pitch, tempo, telephone)."""
        audios = tuple(transform_clip(a, condition) for a in tqdm(self.audios, desc=condition.name, unit="clip"))
        return Corpus(self.manifest, audios, tuple(speech_span(a) for a in audios))

    @property
    def names(self) -> list[str]:
        return [Path(p).stem for p in self.manifest["path"]]

    @property
    def groups(self) -> np.ndarray:
        """shape ``(n,)``: each clip's speaker (packing and babble never mix speakers across this)."""
        return self.manifest["speaker"].astype(str).to_numpy()


@dataclasses.dataclass(frozen=True)
class Placed:
    """One clip inside a packed window."""

    index: int
    """row of the clip in the corpus."""
    first: int
    """first sample of the clip copied into the window."""
    last: int
    """one past the last sample copied."""
    at: int
    """sample of the window where ``first`` lands."""
    segment: tuple[float, float]
    """the clip's segment (speech span plus :data:`SEGMENT_PAD_SECONDS`), seconds from the window start."""


def speech_span(audio: np.ndarray) -> tuple[int, int]:
    """``(first, last)`` samples of a clip's speech: frames within :data:`TRIM_TOP_DB` of its peak frame."""
    _, (first, last) = librosa.effects.trim(audio, top_db=TRIM_TOP_DB, frame_length=1024, hop_length=320)
    if last <= first:
        return 0, len(audio)
    return int(first), int(last)


def pack_windows(corpus: Corpus, *, seed: int) -> list[list[Placed]]:
    """Pack each speaker's clips, in a seeded random order, into windows of at most 30 s (:func:`multimodal_ser.packing.pack`)."""
    rng = np.random.default_rng(seed)
    context = int(CONTEXT_SECONDS * SAMPLE_RATE)
    groups = corpus.groups
    windows: list[list[Placed]] = []
    for g in sorted(set(groups)):
        order = rng.permutation(np.flatnonzero(groups == g))
        cuts = [(max(corpus.speech[i][0] - context, 0), min(corpus.speech[i][1] + context, len(corpus.audios[i]))) for i in order]
        for layout in pack([last - first for first, last in cuts], gap=int(GAP_SECONDS * SAMPLE_RATE)):
            placed = []
            for k, cursor in layout:
                i, (first, last) = order[k], cuts[k]
                s0, s1 = corpus.speech[i]
                at = cursor - first  # window sample of the clip's sample 0
                segment = (
                    max((at + s0) / SAMPLE_RATE - SEGMENT_PAD_SECONDS, cursor / SAMPLE_RATE),
                    min((at + s1) / SAMPLE_RATE + SEGMENT_PAD_SECONDS, (at + last) / SAMPLE_RATE),
                )
                placed.append(Placed(int(i), first, last, cursor, segment))
            windows.append(placed)
    return windows


def isolated_rows(corpus: Corpus, *, seed: int) -> np.ndarray:
    """shape ``(n,)`` bool: the clips encoded alone too, :data:`ISOLATED_SHARE` of each speaker's
    clips of each label (at least one), drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    chosen = np.zeros(len(corpus.audios), dtype=bool)
    table = corpus.manifest.reset_index(drop=True)
    for (name, _, _), members in table.groupby(["corpus", "speaker", "label8"], sort=True):
        share = ISOLATED_SHARE.get(name, 1.0)
        k = max(1, int(round(share * len(members))))
        chosen[rng.choice(members.index.to_numpy(), size=k, replace=False)] = True
    return chosen


def isolated_windows(corpus: Corpus, rows: np.ndarray | None = None) -> list[list[Placed]]:
    """One window per clip (of ``rows``, bool; None: all) holding the whole clip; its segment runs
    from the first to the last speech region the voice-activity detector finds (the whole clip if
    none), as in ``mser evaluate``."""
    from ...vad import SpeechDetector

    detector = SpeechDetector()
    windows = []
    chosen = np.arange(len(corpus.audios)) if rows is None else np.flatnonzero(rows)
    for i in tqdm(chosen, desc="finding speech", unit="clip"):
        clip = corpus.audios[i]
        extent = detector.extent(clip)
        windows.append([Placed(int(i), 0, len(clip), 0, extent if extent is not None else (0.0, len(clip) / SAMPLE_RATE))])
    return windows


def _noise_rng(name: str, condition: Condition, seed: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{name}|{condition.name}|{seed}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _babble(corpus: Corpus, index: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of :data:`BABBLE_TALKERS` unit-RMS speech spans of other speakers' clips, each looped from a random start."""
    others = np.flatnonzero(corpus.groups != corpus.groups[index])
    out = np.zeros(length)
    for k in rng.choice(others, size=BABBLE_TALKERS, replace=False):
        speech = corpus.audios[k][slice(*corpus.speech[k])].astype(np.float64)
        speech /= np.sqrt(np.mean(speech**2)) + 1e-12
        out += np.resize(np.roll(speech, -int(rng.integers(len(speech)))), length)
    return out


def render_window(placed: Sequence[Placed], corpus: Corpus, condition: Condition, *, seed: int) -> np.ndarray:
    """The window's samples, shape ``(n_samples,)`` float32: the clips at their places, plus noise if asked.

    Each clip owns the part of the window from its first sample to the next clip's; the noise in
    that part is scaled so that the clip's speech power over the noise power is ``condition.value`` dB.
    Noise depends only on the clip's name, the condition and ``seed``, not on the packing or folds.
    """
    end = placed[-1].at + placed[-1].last - placed[-1].first
    window = np.zeros(end)
    for p in placed:
        window[p.at : p.at + p.last - p.first] = corpus.audios[p.index][p.first : p.last]
    if condition.kind not in NOISE_KINDS:  # clean, isolated, or a clip transform already applied to the corpus
        return window.astype(np.float32)
    names = corpus.names
    for p, stop in zip(placed, [p.at for p in placed[1:]] + [end], strict=True):
        rng = _noise_rng(names[p.index], condition, seed)
        length = stop - p.at
        noise = rng.standard_normal(length) if condition.kind == "white" else _babble(corpus, p.index, length, rng)
        speech = corpus.audios[p.index][slice(*corpus.speech[p.index])].astype(np.float64)
        gain = np.sqrt(np.mean(speech**2) / (np.mean(noise**2) + 1e-12) / 10 ** (condition.value / 10))
        window[p.at : stop] += gain * noise
    return np.clip(window, -1.0, 1.0).astype(np.float32)


def windows_for(corpus: Corpus, condition: Condition, *, seed: int) -> tuple[Corpus, list[list[Placed]]]:
    """The clips (transformed if the condition says so) and the windows they are encoded in (isolated:
    only the :func:`isolated_rows`)."""
    if condition.kind == ISOLATED:
        return corpus, isolated_windows(corpus, isolated_rows(corpus, seed=seed))
    source = corpus.transformed(condition) if condition.kind in ("pitch", "tempo", "telephone") else corpus
    return source, pack_windows(source, seed=seed)
