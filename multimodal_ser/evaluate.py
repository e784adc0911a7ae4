"""Evaluation on a labelled manifest: every branch once per item, then each modality, pair and fusion compared.

Two stages (``mser evaluate --manifest CSV --out DIR``):

1. :func:`predict_manifest`: for each manifest row (a media file, optionally ``start``/``end`` seconds
   within it, a ``label``, a ``group``, optionally ``text``) each requested branch runs once:

   - **audio**: the item's samples (``start``..``end``; longer than 30 s in several equal windows)
     are encoded once per window by the shared :class:`~multimodal_ser.encoder.SpeechEncoder`; the
     voice model (:class:`~multimodal_ser.voice.VoiceEmotionModel`) reads the span from the first to
     the last speech region that voice activity detection finds in the window (the whole window
     when it finds none), as the pipeline reads a VAD/ASR segment; windows are averaged weighted
     by their seconds of speech.
   - **text**: the row's ``text`` when given, else the ASR transcript of the SAME encoded windows
     (:class:`~multimodal_ser.asr.CTranslate2Transcriber`), through
     :class:`~multimodal_ser.text.TextEmotionModel`. A blank text means the modality is absent.
   - **face**: images through :meth:`~multimodal_ser.face.FaceAnalyzer.analyze_image` (the largest
     face), videos through :meth:`~multimodal_ser.face.FaceAnalyzer.analyze` reduced to the item's
     ``start``..``end`` by :func:`~multimodal_ser.face.face_segment_table` (the face whose mouth
     moves most, else the largest: its mean probabilities); absent when no face is seen.

   A modality the file cannot have (audio of an image, face of an audio file) is absent, not an
   error. A row whose media file does not exist but that has ``text`` is a text-only item. An item
   that fails (unreadable media, ...) is logged with its path and reason and counted in
   ``failures``; it is left out of every score, so all systems are compared on the same items.
   What each pass computes is cached under ``weights.cache_dir()/evaluate`` keyed by the file's
   sha256, ``start``, ``end`` and the model ids: the voice features (so that another voice head
   needs no new encoder pass), the ASR transcript, the text and face outputs. A re-run is fast.

2. :func:`compare_predictions` (:func:`evaluate_predictions` also writes the report): each
   modality alone, and for every set of two or more modalities
   late fusion with the default weights, late fusion with learned weights (stacking) and attention
   fusion. Whatever is learned is learned on some groups and measured on others: group k-fold
   cross-fitting (:func:`group_folds`) gives an out-of-fold prediction for every item, and no group
   is ever on both sides. Every system is scored on the items where it gives a label (``n``;
   ``coverage`` = n / items): ``ua``, ``wa``, ``macro_f1`` with bootstrap 95% intervals (whole
   groups resampled when the manifest has groups), confusion matrix and expected calibration
   error; the same per ``group`` value when asked. Written as ``metrics.json``, ``metrics.md`` and
   ``comparison.png``.

The predictions must be held out from what trained the branches: evaluating the packaged voice
head on the RAVDESS actors it was trained on measures memory, not recognition. The report warns
when that happens (:attr:`Predictions.warnings`); give ``audio_head`` a head trained on other
speakers, or one per group (``mser evaluate --cross-fit-audio``,
:func:`multimodal_ser.training.fusion.cross_fitted_voice_heads`).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import itertools
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from . import __version__
from . import metrics as M
from .errors import MediaError, ModelError, MserError
from .files import atomic_output, sha256_file
from .fusion import LateFusion, balanced_row_weights, fit_late_fusion, fit_temperature, modality_probabilities
from .fusion import valid_modalities as _valid_modalities
from .grid import make_grid, modality_table
from .labels import EMOTIONS, MODALITIES
from .manifest import read_manifest
from .media import SAMPLE_RATE, VIDEO_EXTENSIONS

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
"""Files the face branch reads as still images."""

PREDICTION_RECIPE = "evaluate-items/v1"
"""Version of the per-item recipe above; part of every cache key."""

MAX_WINDOW_SECONDS = 30.0
"""An item longer than this is encoded in several equal windows."""


# --- stage 1: per-item predictions ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Predictions:
    """Every branch's output for the items of a manifest."""

    table: pd.DataFrame
    """one row per manifest row that did not fail: ``path``, ``start``, ``end`` (seconds; NaN = the
    whole file), ``label``, ``group`` (str; the item's own index when the manifest has none),
    ``text`` (what the text branch read), ``text_source`` (``manifest``, ``asr`` or None), the
    manifest's other columns (``source``, ``actor``, ...), and for each requested modality the
    columns of :func:`multimodal_ser.grid.modality_table`."""
    failures: list[dict]
    """``{"path", "line", "reason"}`` of each item that failed."""
    modalities: tuple[str, ...]
    model_ids: dict
    warnings: tuple[str, ...] = ()
    """what makes some scores untrustworthy (for example a head scored on its own training speakers)."""


class _Cache:
    """Per-branch prediction files: ``root/<branch>/<key[:2]>/<key>.npz`` (no pickles)."""

    def __init__(self, root: Path | None):
        self.root = root

    @staticmethod
    def key(*parts) -> str:
        return hashlib.sha256(json.dumps([PREDICTION_RECIPE, *parts], sort_keys=True, default=str).encode()).hexdigest()

    def _file(self, branch: str, key: str) -> Path:
        return self.root / branch / key[:2] / f"{key}.npz"

    def get(self, branch: str, key: str) -> dict | None:
        if self.root is None or not self._file(branch, key).is_file():
            return None
        try:
            with np.load(self._file(branch, key), allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable cache file %s (%s)", self._file(branch, key), e)
            return None

    def put(self, branch: str, key: str, **arrays) -> None:
        if self.root is None:
            return
        with atomic_output(self._file(branch, key)) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)


@dataclasses.dataclass
class _Branch:
    """One modality's output for one item."""

    probabilities: np.ndarray | None = None
    """(7,) over EMOTIONS, or None when the modality is absent."""
    embedding: np.ndarray | None = None

    @property
    def present(self) -> bool:
        return self.probabilities is not None

    def arrays(self) -> dict:
        if not self.present:
            return {"present": np.array(False)}
        return {"present": np.array(True), "probabilities": self.probabilities, "embedding": self.embedding}

    @classmethod
    def from_arrays(cls, arrays: dict) -> _Branch:
        if not bool(arrays["present"]):
            return cls()
        return cls(np.asarray(arrays["probabilities"], dtype=np.float64), np.asarray(arrays["embedding"], dtype=np.float32))


class _Models:
    """The branches' models, loaded on first use; ids known before any heavy model is loaded."""

    def __init__(self, *, asr_model: str, language: str | None, threads: int, fps: float, text_head):
        self.asr_model = asr_model
        self.language = language
        self.threads = threads
        self.fps = fps
        self.text_head = text_head
        self._loaded: dict[str, object] = {}

    def _get(self, name: str, factory):
        if name not in self._loaded:
            self._loaded[name] = factory()
        return self._loaded[name]

    def ct2_dir(self) -> Path:
        from .weights import PACKAGED_WHISPER, ctranslate2_dir

        if self.asr_model in PACKAGED_WHISPER:
            return ctranslate2_dir(self.asr_model)
        if (Path(self.asr_model) / "model.bin").is_file():
            return Path(self.asr_model)
        raise MserError(f"asr_model must be a packaged Whisper name or a CTranslate2 folder, not {self.asr_model!r}")

    def whisper_id(self) -> dict:
        from .weights import PACKAGED_WHISPER

        packaged = PACKAGED_WHISPER.get(self.asr_model)
        if packaged is not None:
            return {"name": self.asr_model, "sha256": [sha for _, _, sha in packaged.parts]}
        return {"name": str(Path(self.asr_model).resolve()), "sha256": sha256_file(self.ct2_dir() / "model.bin")}

    def encoder(self):
        import torch

        from .encoder import SpeechEncoder
        from .weights import load_openai_whisper

        def make():
            torch.set_num_threads(self.threads)
            return SpeechEncoder(load_openai_whisper(self.asr_model))

        return self._get("encoder", make)

    def transcriber(self):
        from .asr import AsrOptions, CTranslate2Transcriber

        def make():
            multilingual = self.encoder().model.is_multilingual
            return CTranslate2Transcriber(
                self.ct2_dir(), multilingual=multilingual, options=AsrOptions(language=self.language), threads=self.threads
            )

        return self._get("transcriber", make)

    def vad(self):
        from .vad import SpeechDetector

        return self._get("vad", SpeechDetector)

    def voice(self, head: Path | None):
        """The voice model with ``head`` (None: the packaged head); one instance per head file."""
        from .voice import VoiceEmotionModel

        return self._get(f"voice:{head}", lambda: VoiceEmotionModel() if head is None else VoiceEmotionModel(head_path=head))

    def text(self):
        from .text import TextEmotionModel

        return self._get("text", lambda: TextEmotionModel(head_path=self.text_head))

    def face(self):
        from .face import FaceAnalyzer

        return self._get("face", lambda: FaceAnalyzer(fps=self.fps))


def _file_key(path: Path, memo: dict) -> str:
    stat = path.stat()
    token = (str(path), stat.st_size, stat.st_mtime_ns)
    if token not in memo:
        memo[token] = sha256_file(path)
    return memo[token]


def _item_audio(path: Path, start: float, end: float, memo: dict) -> np.ndarray | None:
    """The item's mono samples at 16 kHz (None for a file without sound); the last decoded file is kept for rows that share it."""
    from .media import load_audio, probe

    if memo.get("path") != path:
        memo.clear()
        info = probe(path)
        memo.update(path=path, audio=load_audio(path) if info.has_audio else None)
    audio = memo["audio"]
    if audio is None:
        return None
    first = 0 if np.isnan(start) else int(round(start * SAMPLE_RATE))
    last = len(audio) if np.isnan(end) else min(int(round(end * SAMPLE_RATE)), len(audio))
    if last - first < int(0.1 * SAMPLE_RATE):
        held = max(last - first, 0) / SAMPLE_RATE
        raise MediaError(f"{path}: the item holds {held:.2f} s of audio in {start}..{end} s (at least 0.1 s needed)")
    return audio[first:last]


def _speech_span(models: _Models, samples: np.ndarray, offset: float) -> tuple[float, float]:
    """From the first to the last VAD speech region of ``samples`` (seconds, recording clock); all of it if none."""
    extent = models.vad().extent(samples)
    start, end = extent if extent is not None else (0.0, len(samples) / SAMPLE_RATE)
    return offset + start, offset + end


def _speech_passes(
    models: _Models, samples: np.ndarray, start: float, *, want_features: bool, want_asr: bool
) -> tuple[dict | None, str | None]:
    """Encode the item once per window; voice features and/or the ASR transcript from the same passes.

    Returns:
        ``({"features": (n_windows, F) float32, "weights": (n_windows,) seconds of speech}`` or None,
        the transcript or None)``.
    """
    from .voice import segment_features, segment_span

    n_windows = int(np.ceil(len(samples) / (MAX_WINDOW_SECONDS * SAMPLE_RATE)))
    edges = np.linspace(0, len(samples), n_windows + 1).astype(int)
    encoder = models.encoder()
    features, weights, texts = [], [], []
    if want_asr and models.language is None:
        models.transcriber().language = None  # detect each item's language afresh
    for first, last in zip(edges[:-1], edges[1:]):
        piece = samples[first:last]
        offset = start + first / SAMPLE_RATE
        encoded = encoder.encode(piece, offset=offset)
        if want_features:
            span_start, span_end, _ = segment_span(encoded, *_speech_span(models, piece, offset))
            features.append(segment_features(encoded, span_start, span_end))
            weights.append(span_end - span_start)
        if want_asr:
            texts += [s.text.strip() for s in models.transcriber().transcribe(encoded)]
    voice = {"features": np.stack(features), "weights": np.asarray(weights)} if want_features else None
    return voice, (" ".join(t for t in texts if t) if want_asr else None)


def _face_branch(models: _Models, path: Path, start: float, end: float, memo: dict) -> _Branch:
    from .face import face_segment_table

    analyzer = models.face()
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        frames = analyzer.analyze_image(path, cropped=memo["crops"])
        faces = frames[frames["face_present"].astype(bool)]
        if faces.empty:
            return _Branch()
        face = faces.sort_values("face_id").iloc[0]  # analyze_image numbers faces largest first
        probabilities = face[[f"face_{label}" for label in EMOTIONS]].to_numpy(dtype=np.float64)
        return _Branch(probabilities / probabilities.sum(), np.asarray(face["face_embedding"], dtype=np.float32))
    if memo.get("path") != path:
        from .media import probe

        memo.update(path=path, frames=analyzer.analyze(path), duration=probe(path).duration)
    grid = make_grid([0.0 if np.isnan(start) else start], [memo["duration"] if np.isnan(end) else end])
    table = face_segment_table(memo["frames"], grid)
    if not bool(table["face_present"].iloc[0]):
        return _Branch()
    probabilities = table[[f"face_{label}" for label in EMOTIONS]].iloc[0].to_numpy(dtype=np.float64)
    return _Branch(probabilities, np.asarray(table["face_embedding"].iloc[0], dtype=np.float32))


class _ItemRunner:
    """Runs the requested branches on one manifest row, through the cache."""

    def __init__(self, models: _Models, cache: _Cache, ids: dict, modalities: tuple[str, ...], *, images_are_face_crops: bool):
        self.models, self.cache, self.ids, self.modalities = models, cache, ids, modalities
        self.hashes: dict = {}
        self.audio_memo: dict = {}
        self.face_memo: dict = {"crops": images_are_face_crops}

    def run(self, row: pd.Series, index: int) -> dict:
        """``{"index", "group", "kind", "branches": {modality: _Branch}, "voice", "text", "text_source"}``;
        ``voice`` holds the voice features (the head is applied afterwards). Raises on a bad item."""
        path = Path(row["path"])
        start, end = float(row["start"]), float(row["end"])
        given_text = row["text"] if isinstance(row["text"], str) else ""
        if not path.is_file():
            if not (given_text.strip() and "text" in self.modalities):
                raise MediaError(f"{path}: no such file")
            kind, file_key = "none", None
        else:
            suffix = path.suffix.lower()
            kind = "image" if suffix in IMAGE_EXTENSIONS else "video" if suffix in VIDEO_EXTENSIONS else "audio"
            file_key = _file_key(path, self.hashes)
        item = {
            "index": index, "group": row["group"], "kind": kind, "branches": {}, "voice": None, "text": None, "text_source": None
        }
        speech = kind in ("audio", "video")
        want_audio = "audio" in self.modalities and speech
        want_asr = "text" in self.modalities and speech and not given_text.strip()
        item["voice"], transcript = self._speech(path, file_key, start, end, want_audio=want_audio, want_asr=want_asr)
        if "text" in self.modalities:
            if given_text.strip():
                item["text"], item["text_source"] = given_text, "manifest"
            elif want_asr:
                item["text"], item["text_source"] = transcript, "asr"
        if "face" in self.modalities:
            item["branches"]["face"] = self._face(path, file_key, start, end) if kind in ("image", "video") else _Branch()
        return item

    def _speech(self, path: Path, file_key, start: float, end: float, *, want_audio: bool, want_asr: bool):
        """Voice features and the ASR transcript, from the cache or from one encoder pass per window."""
        voice, transcript, features_key, asr_key = None, None, None, None
        if want_audio:
            ids = self.ids["audio"]
            features_key = self.cache.key("voice-features", file_key, start, end, ids["encoder"], ids["features"])
            voice = self.cache.get("voice-features", features_key)
        if want_asr:
            asr_key = self.cache.key("asr", file_key, start, end, self.ids["asr"])
            cached = self.cache.get("asr", asr_key)
            transcript = None if cached is None else str(cached["text"])
        need_features, need_asr = want_audio and voice is None, want_asr and transcript is None
        if not (need_features or need_asr):
            return voice, transcript
        samples = _item_audio(path, start, end, self.audio_memo)
        if samples is None:  # a video without sound
            computed_voice, computed_text = {"features": np.zeros((0, 0), np.float32), "weights": np.zeros(0)}, ""
        else:
            offset = 0.0 if np.isnan(start) else start
            computed_voice, computed_text = _speech_passes(
                self.models, samples, offset, want_features=need_features, want_asr=need_asr
            )
        if need_features:
            voice = computed_voice
            self.cache.put("voice-features", features_key, **voice)
        if need_asr:
            transcript = computed_text
            self.cache.put("asr", asr_key, text=np.array(transcript))
        return voice, transcript

    def _face(self, path: Path, file_key, start: float, end: float) -> _Branch:
        key = self.cache.key("face", file_key, start, end, self.ids["face"])
        cached = self.cache.get("face", key)
        if cached is not None:
            return _Branch.from_arrays(cached)
        face = _face_branch(self.models, path, start, end, self.face_memo)
        self.cache.put("face", key, **face.arrays())
        return face


def _valid_positive_int(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, not {value!r}")
    return int(value)


def _load_manifest(manifest) -> tuple[pd.DataFrame, dict]:
    if isinstance(manifest, pd.DataFrame):
        table = manifest.reset_index(drop=True)
        missing = [c for c in ("path", "label") if c not in table]
        if missing:
            raise ValueError(f"manifest frame lacks the columns {missing}; expected path, label (+ start, end, group, text)")
        for column, default in (("start", np.nan), ("end", np.nan), ("group", None), ("text", "")):
            if column not in table:
                table[column] = default
        bad = sorted(set(table["label"]) - set(EMOTIONS))
        if bad:
            raise ValueError(f"manifest labels must be names of {EMOTIONS}; found {bad[:5]}")
        return table, {"source": "DataFrame", "n_rows": len(table)}
    path = Path(manifest)
    table = read_manifest(path, labels=EMOTIONS, check_files=False)
    return table, {"path": str(path.resolve()), "sha256": sha256_file(path), "n_rows": len(table)}


def predict_manifest(
    manifest: str | os.PathLike | pd.DataFrame,
    *,
    modalities: Sequence[str] = MODALITIES,
    asr_model: str = "base",
    language: str | None = None,
    images_are_face_crops: bool = False,
    fps: float = 4.0,
    audio_head: str | os.PathLike | Mapping[str, str | os.PathLike] | None = None,
    text_head: str | os.PathLike | None = None,
    threads: int = 2,
    use_cache: bool = True,
    progress: bool = True,
) -> Predictions:
    """Run each requested branch once on every item of a labelled manifest (see the module docstring).

    Args:
        manifest: a manifest CSV (:func:`multimodal_ser.manifest.read_manifest`; labels must be
            names of :data:`~multimodal_ser.labels.EMOTIONS`), or an equivalent DataFrame.
        modalities: branches to run, a non-empty subset of ``("audio", "text", "face")``.
        asr_model: packaged Whisper name or CTranslate2 folder: the speech encoder and, for rows
            without ``text``, the transcriber.
        language: spoken language for ASR (ISO code); None detects it per item.
        images_are_face_crops: images already are face crops (FER2013 style): classify the whole
            image instead of detecting faces in it.
        fps: video frames per second read by the face branch.
        audio_head: the voice head file; None uses the packaged one. A mapping ``{group: head
            file}`` gives each group's items a head that was trained without that group
            (cross-fitted heads: the honest way to evaluate on the speakers the packaged head
            was trained on); every group with audio or video items must then have one.
        text_head: the text head file; None uses the packaged one.
        threads: CPU threads for the encoder and the decoder.
        use_cache: read and write the per-branch prediction cache.
        progress: show a progress bar.

    Returns:
        :class:`Predictions`.

    Raises:
        ManifestError: the manifest is malformed.
        ModelError: a model file is missing or corrupt (fatal: it would fail every item).
    """
    modalities = _valid_modalities(modalities)
    threads = _valid_positive_int("threads", threads)
    if not 0 < fps <= 30:
        raise ValueError(f"fps must be in (0, 30], not {fps}")
    table, manifest_info = _load_manifest(manifest)
    models = _Models(asr_model=asr_model, language=language, threads=threads, fps=fps, text_head=text_head)
    heads = _voice_heads(audio_head, table) if "audio" in modalities else {}
    from .voice import FEATURE_RECIPE
    from .weights import cache_dir

    cache = _Cache(cache_dir() / "evaluate" if use_cache else None)
    # what the encoder pass and the face branch depend on; the heads' ids are added after the pass
    ids: dict = {}
    if "audio" in modalities:
        ids["audio"] = {
            "encoder": models.whisper_id(),
            "features": {"recipe": FEATURE_RECIPE, "span": "vad-first-to-last, voice.segment_span"},
        }
    if "text" in modalities:
        ids["asr"] = {"engine": "ctranslate2", **models.whisper_id(), "language": language, "beam_size": 5}
    if "face" in modalities:
        ids["face"] = {"models": models.face().model_ids, "config": models.face().config, "crops": images_are_face_crops}

    runner = _ItemRunner(models, cache, ids, modalities, images_are_face_crops=images_are_face_crops)
    results: list[dict] = []
    failures: list[dict] = []
    order = np.argsort(table["path"].to_numpy(dtype=str), kind="stable")  # rows of one file together
    for index in tqdm(order, desc="predicting items", unit="item", disable=not progress):
        row = table.iloc[index]
        try:
            results.append(runner.run(row, int(index)))
        except ModelError:
            raise
        except Exception as e:  # one bad item must not stop the evaluation
            reason = f"{type(e).__name__}: {e}"
            log.warning("%s: item failed (%s)", row["path"], reason)
            log.debug("traceback of the failed item", exc_info=True)
            failures.append({"path": str(row["path"]), "line": int(index) + 2, "reason": reason})
    n_text_only = sum(item["kind"] == "none" for item in results)
    if n_text_only:
        log.warning("%d items have no media file: only their text was used", n_text_only)
    warnings = []
    if "audio" in modalities:
        ids["audio"]["voice"] = {str(head): models.voice(head).model_ids for head in sorted(set(heads.values()), key=str)}
        warnings += _heard_in_training(models, table, heads)
        _voice_branches(models, results, heads)
    if "text" in modalities:
        ids["text"] = models.text().model_ids
        _text_branches(models, results, cache, ids["text"])
    out = _prediction_table(table, results, modalities)
    if failures:
        log.warning("%d of %d items failed; they are left out of every score", len(failures), len(table))
    ids["manifest"] = manifest_info
    for warning in warnings:
        log.warning("%s", warning)
    return Predictions(table=out, failures=failures, modalities=modalities, model_ids=ids, warnings=tuple(warnings))


def _heard_in_training(models: _Models, table: pd.DataFrame, heads: dict) -> list[str]:
    """A warning per voice head that is applied to RAVDESS clips of actors it was trained on (its
    config's ``training.ravdess_actors``): on them it recalls, it does not recognise."""
    from .manifest import ravdess_fields

    heard: dict[str, int] = {}
    for path, group in zip(table["path"], table["group"]):
        fields = ravdess_fields(Path(path).stem)
        if fields is None or fields["modality"] == "video-only":
            continue
        head = heads.get(str(group), heads.get(None))
        if fields["actor"] in models.voice(head).config.get("training", {}).get("ravdess_actors", []):
            name = "the packaged voice head" if head is None else f"voice head {head}"
            heard[name] = heard.get(name, 0) + 1
    return [
        f"{n} items are RAVDESS clips of actors {name} was trained on: its scores on them (and every fusion "
        "with audio) measure memory, not recognition. Use voice heads trained without each actor "
        "(mser evaluate --cross-fit-audio RAVDESS_DIR)."
        for name, n in heard.items()
    ]


def _voice_heads(audio_head, table: pd.DataFrame) -> dict:
    """``{group: head path or None}``; the key None holds the head of every group when one head is used."""
    if audio_head is None or isinstance(audio_head, (str, os.PathLike)):
        return {None: None if audio_head is None else Path(audio_head)}
    if not isinstance(audio_head, Mapping):
        raise ValueError(f"audio_head must be a path, a mapping group -> path, or None, not {type(audio_head).__name__}")
    heads = {str(g): Path(p) for g, p in audio_head.items()}
    sound = np.array([Path(p).suffix.lower() not in IMAGE_EXTENSIONS and Path(p).is_file() for p in table["path"]])
    groups = [g for g, s in zip(table["group"], sound) if s]
    missing = sorted({str(g) for g in groups if g is None or str(g) not in heads})
    if missing:
        raise ValueError(
            f"audio_head maps groups {sorted(heads)[:5]}..., but items with sound also have groups {missing[:5]} without a head"
        )
    return heads


def _voice_branches(models: _Models, results: list[dict], heads: dict) -> None:
    """Voice emotion of every item from its cached features, each group through its head;
    windows are averaged weighted by their seconds of speech."""
    for item in results:
        voice = item.pop("voice")
        if voice is None or len(voice["weights"]) == 0:
            item["branches"]["audio"] = _Branch()
            continue
        model = models.voice(heads.get(item["group"], heads.get(None)))
        emotions, embeddings = _voice_outputs(model, voice["features"])
        w = np.asarray(voice["weights"], dtype=np.float64)
        w = w / w.sum()
        probabilities = np.tensordot(w, emotions, axes=1)
        embedding = np.tensordot(w, embeddings, axes=1)
        item["branches"]["audio"] = _Branch(probabilities / probabilities.sum(), embedding.astype(np.float32))


def _voice_outputs(model, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What :meth:`VoiceEmotionModel.predict` computes after :func:`voice.segment_features`:
    ``(emotions (k, 7), embeddings (k, d))`` from features ``(k, F)``."""
    import torch

    from .voice import SHARED_SPACE

    with torch.inference_mode():
        probs8, embedding = model.head.probabilities(torch.from_numpy(np.asarray(features, dtype=np.float32)))
    return probs8.double().numpy() @ SHARED_SPACE, embedding.double().numpy()


def _text_branches(models: _Models, results: list[dict], cache: _Cache, text_ids: dict) -> None:
    """Text emotion for every distinct non-blank text, from the cache or in one batch."""
    texts = sorted({item["text"].strip() for item in results if item["text"] and item["text"].strip()})
    found: dict[str, _Branch] = {}
    missing = []
    for text in texts:
        cached = cache.get("text", cache.key("text", text, text_ids))
        if cached is None:
            missing.append(text)
        else:
            found[text] = _Branch.from_arrays(cached)
    if missing:
        prediction = models.text().predict(missing)
        for text, probabilities, embedding in zip(missing, prediction.emotions, prediction.embeddings):
            found[text] = _Branch(np.asarray(probabilities, dtype=np.float64), np.asarray(embedding, dtype=np.float32))
            cache.put("text", cache.key("text", text, text_ids), **found[text].arrays())
    for item in results:
        text = (item["text"] or "").strip()
        item["branches"]["text"] = found[text] if text else _Branch()


def _prediction_table(manifest: pd.DataFrame, results: list[dict], modalities: Sequence[str]) -> pd.DataFrame:
    results = sorted(results, key=lambda item: item["index"])
    rows = manifest.iloc[[item["index"] for item in results]].reset_index(drop=True)
    groups = [str(g) if isinstance(g, str) and g.strip() else f"item-{item['index']}" for g, item in zip(rows["group"], results)]
    base = pd.DataFrame(
        {
            "path": rows["path"].astype(str),
            "start": rows["start"].astype(np.float64),
            "end": rows["end"].astype(np.float64),
            "label": rows["label"].astype(str),
            "group": pd.Series(groups, dtype=object),
            "text": pd.Series([item["text"] for item in results], dtype=object),
            "text_source": pd.Series([item["text_source"] for item in results], dtype=object),
        }
    )
    extra = [
        c for c in rows.columns
        if c not in base.columns and c != "split" and not any(c.startswith(f"{m}_") for m in MODALITIES)
    ]
    tables = [base, rows[extra].reset_index(drop=True)]
    n = len(results)
    for m in modalities:
        branches = [item["branches"][m] for item in results]
        present = np.array([b.present for b in branches], dtype=bool)
        probabilities = np.full((n, len(EMOTIONS)), np.nan)
        dims = {len(b.embedding) for b in branches if b.present}
        if len(dims) > 1:
            raise ModelError(f"{m} embeddings of different sizes {sorted(dims)}: the cache mixes models")
        embeddings = np.zeros((n, dims.pop()), dtype=np.float32) if dims else None
        for i, b in enumerate(branches):
            if b.present:
                probabilities[i] = b.probabilities
                embeddings[i] = b.embedding
        tables.append(modality_table(m, probabilities, present, embeddings))
    return pd.concat(tables, axis=1)


# --- stage 2: cross-fitted comparison -----------------------------------------------------------


def group_folds(groups: Sequence, *, folds: int, seed: int = 0) -> np.ndarray:
    """Assign whole groups to ``folds`` folds of similar size.

    Groups are shuffled with ``seed``, then taken largest first (stable) and each put in the fold
    with the fewest items so far.

    Args:
        groups: the group (speaker) of each item, shape ``(n,)``.
        folds: number of folds, >= 2 and at most the number of distinct groups.

    Returns:
        shape ``(n,)`` int: each item's fold in ``0..folds-1``; items of a group share a fold.

    Raises:
        ValueError: fewer distinct groups than folds.
    """
    folds = _valid_positive_int("folds", folds, 2)
    groups = np.asarray([str(g) for g in groups], dtype=object)
    names, counts = np.unique(groups, return_counts=True)
    if len(names) < folds:
        raise ValueError(f"{folds} folds need at least {folds} distinct groups, found {len(names)}")
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(names))
    ordered = shuffled[np.argsort(-counts[shuffled], kind="stable")]
    sizes = np.zeros(folds, dtype=np.int64)
    fold_of = {}
    for g in ordered:
        f = int(np.argmin(sizes))
        fold_of[names[g]] = f
        sizes[f] += counts[g]
    return np.array([fold_of[g] for g in groups], dtype=np.int64)


def plan_folds(n_groups: int, folds: int) -> tuple[int | None, str | None]:
    """How many group folds the learned fusions can use with ``n_groups`` groups.

    Returns:
        ``(folds to use, note)``: ``folds`` when there are enough groups; ``n_groups``
        (leave-one-group-out) when there are fewer; None when there is a single group (nothing can
        be learned on some speakers and measured on others; single branches and the shipped default
        are still scored). The note says which, for the report; None when nothing changed.
    """
    folds = _valid_positive_int("folds", folds, 2)
    if n_groups < 2:
        return None, (
            f"{n_groups} group: learned fusions need speakers to learn on and others to be measured on, so they are "
            "not scored; each branch alone and the fusions as shipped are"
        )
    if n_groups < folds:
        return n_groups, f"{n_groups} groups < {folds} folds: leave-one-group-out ({n_groups} folds)"
    return folds, None


MIN_GROUPS_ATTENTION = 3
"""Attention fusion trains on some groups, stops early on another and is measured on a third."""


FUSION_SYSTEMS = ("default", "late_equal", "late_learned", "attention")
"""The fusions :func:`compare_predictions` can score."""


@dataclasses.dataclass
class _System:
    """One row of the comparison: out-of-fold probabilities for every item (NaN where it gives no label)."""

    key: str
    name: str
    kind: str
    modalities: tuple[str, ...]
    probabilities: np.ndarray
    present: np.ndarray
    uncalibrated: np.ndarray | None = None
    """out-of-fold probabilities before temperature scaling (T = 1), for the ECE before/after."""
    calibrated: np.ndarray | None = None
    """for the default late fusion: out-of-fold probabilities with a cross-fitted temperature."""
    parameters: dict = dataclasses.field(default_factory=dict)


def _subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    return [s for k in range(2, len(modalities) + 1) for s in itertools.combinations(modalities, k)]


def _restricted(table: pd.DataFrame, keep: Sequence[str], modalities: Sequence[str]) -> pd.DataFrame:
    """A copy of ``table`` where the modalities not in ``keep`` are absent on every row."""
    out = table.copy()
    for m in modalities:
        if m not in keep:
            out[f"{m}_present"] = False
    return out


def _packaged_default(fusions: Sequence[str]):
    """The packaged default fusion, or None (with a warning) when it cannot be loaded."""
    if "default" not in fusions:
        return None
    from .fusion import load_fusion

    try:
        return load_fusion("default")
    except ModelError as e:
        log.warning("the packaged default fusion is not scored: %s", e)
        return None


def _priors(default) -> dict:
    """The branch priors the packaged late fusion reads evidence against (none for attention)."""
    if isinstance(default, LateFusion):
        return dict(default.priors)
    from .fusion import load_fusion

    try:
        late = load_fusion("late")
    except ModelError:
        return {}
    return dict(late.priors)


def _as_shipped(default, table: pd.DataFrame, subset: tuple[str, ...], modalities: tuple[str, ...]) -> _System:
    """The packaged default fusion applied as it ships (nothing fitted on this data), given only ``subset``."""
    tag = "+".join(subset)
    probabilities, present = default.fuse(_restricted(table, subset, modalities))
    described = default.describe()
    return _System(
        f"default:{tag}", f"default fusion, as shipped ({tag})", "default", subset, probabilities, present,
        parameters={k: described[k] for k in ("fusion", "weights", "temperature") if k in described},
    )


def _cross_fit_late(
    table: pd.DataFrame, labels: np.ndarray, fold: np.ndarray | None, subset: tuple[str, ...], priors: dict
) -> tuple[_System, _System | None]:
    """Late fusion with equal weights and no priors (plus a cross-fitted temperature), and late
    fusion learned by stacking on the prior-relative evidence (None without folds)."""
    n = len(table)
    equal = LateFusion(weights={m: 1.0 for m in subset})
    equal_probs, present = equal.fuse(table)
    scaled = np.full_like(equal_probs, np.nan)
    learned, learned_raw = np.full_like(equal_probs, np.nan), np.full_like(equal_probs, np.nan)
    temperatures, weights, learned_t = [], [], []
    k = 0 if fold is None else fold.max() + 1
    for f in range(k):
        train, test = fold != f, fold == f
        calibrated = fit_temperature(equal, table[train], list(labels[train]))
        temperatures.append(calibrated.temperature)
        scaled[test] = calibrated.fuse(table[test])[0]
        try:
            stacked = fit_late_fusion(
                table[train], list(labels[train]), modalities=subset, priors={m: p for m, p in priors.items() if m in subset},
                row_weights=balanced_row_weights(labels[train]),
            )
        except ValueError as e:  # nothing informative to stack in this fold's training part
            log.warning("late fusion of %s, fold %d: %s; the fold's items get no label from it", subset, f, e)
            weights.append({m: 0.0 for m in subset})
            learned_t.append(None)
            continue
        weights.append({m: stacked.weights[m] for m in subset})
        learned_t.append(stacked.temperature)
        learned[test] = stacked.fuse(table[test])[0]
        learned_raw[test] = dataclasses.replace(stacked, temperature=1.0).fuse(table[test])[0]
    tag = "+".join(subset)
    late_equal = _System(
        f"late_equal:{tag}", f"late fusion, equal weights, the old default ({tag})", "late_equal", subset, equal_probs, present,
        uncalibrated=equal_probs, calibrated=scaled if k else None,
        parameters={"weights": {m: 1.0 for m in subset}, "temperature": 1.0, "calibrated_temperature_per_fold": temperatures},
    )
    if not k:
        return late_equal, None
    mean_weights = {m: float(np.mean([w[m] for w in weights])) for m in subset}
    late_learned = _System(
        f"late_learned:{tag}", f"late fusion, learned here ({tag})", "late_learned", subset, learned,
        ~np.isnan(learned).any(axis=1),  # a modality stacked to weight 0 gives no label on its own
        uncalibrated=learned_raw,
        parameters={"weights_per_fold": weights, "weights_mean": mean_weights, "temperature_per_fold": learned_t,
                    "priors": {m: list(p) for m, p in priors.items() if m in subset}},
    )
    return late_equal, late_learned


def _validation_split(groups: np.ndarray, rows: np.ndarray, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``rows`` (bool mask) by group into training (about 4/5) and validation (about 1/5) masks."""
    inside = np.flatnonzero(rows)
    parts = min(5, len(set(groups[inside])))
    if parts < 2:
        raise ValueError(f"attention fusion needs at least 2 groups to train on, found {parts}")
    held = group_folds(groups[inside], folds=parts, seed=seed) == 0
    train, val = np.zeros(len(groups), dtype=bool), np.zeros(len(groups), dtype=bool)
    train[inside[~held]], val[inside[held]] = True, True
    return train, val


def _cross_fit_attention(
    table: pd.DataFrame, labels: np.ndarray, fold: np.ndarray, modalities: tuple[str, ...], *, seed: int, options
) -> dict[tuple[str, ...], _System]:
    """Attention fusion trained per fold on all ``modalities`` (early stopping and temperature on a
    fifth of the training groups), measured on the held-out fold with all of them and with each
    subset of two or more."""
    from .attention_fusion import fit_attention_fusion

    k = fold.max() + 1
    subsets = _subsets(modalities)
    probs = {s: np.full((len(table), len(EMOTIONS)), np.nan) for s in subsets}
    raw = {s: np.full((len(table), len(EMOTIONS)), np.nan) for s in subsets}
    details = []
    groups = table["group"].to_numpy(dtype=object)
    for f in range(k):
        test = fold == f
        train, val = _validation_split(groups, ~test, seed=seed + f)
        fusion = fit_attention_fusion(
            table[train], list(labels[train]), validation=(table[val], list(labels[val])),
            modalities=modalities, options=options, seed=seed + f,
        )
        details.append({"temperature": fusion.temperature, **fusion.config["training"]})
        for s in subsets:
            held_out = _restricted(table[test], s, modalities)
            logits, present = fusion.logits(held_out)
            probs[s][test] = fusion.fuse(held_out)[0]
            unscaled = np.full_like(logits, np.nan)
            z = logits[present] * fusion.temperature  # before temperature scaling
            z -= z.max(axis=1, keepdims=True)
            unscaled[present] = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
            raw[s][test] = unscaled
    out = {}
    for s in subsets:
        tag = "+".join(s)
        name = f"attention fusion ({tag})" if s == modalities else f"attention fusion, given only {tag}"
        present = ~np.isnan(probs[s]).any(axis=1)
        out[s] = _System(f"attention:{tag}", name, "attention", s, probs[s], present, uncalibrated=raw[s],
                         parameters={"trained_on": list(modalities), "per_fold": details})
    return out


def _score(system: _System, labels: np.ndarray, groups: np.ndarray | None, *, bootstrap: int, seed: int) -> dict:
    rows = system.present
    n = int(rows.sum())
    out: dict = {
        "name": system.name, "kind": system.kind, "modalities": list(system.modalities), "n": n, "coverage": n / len(labels)
    }
    if n == 0:
        return out
    probabilities = system.probabilities[rows]
    predicted = [EMOTIONS[i] for i in probabilities.argmax(axis=1)]
    out.update(
        M.summary(
            list(labels[rows]), predicted, labels=EMOTIONS, probabilities=probabilities,
            groups=None if groups is None else groups[rows], n_resamples=bootstrap, seed=seed,
        )
    )
    if system.uncalibrated is not None:
        out["ece_uncalibrated"] = M.expected_calibration_error(system.uncalibrated[rows], list(labels[rows]), labels=EMOTIONS)
    if system.calibrated is not None:
        out["ece_temperature_scaled"] = M.expected_calibration_error(system.calibrated[rows], list(labels[rows]), labels=EMOTIONS)
    if system.parameters:
        out["parameters"] = system.parameters
    return out


def _gains_over_best_alone(
    systems: Sequence[_System], scores: dict, labels: np.ndarray, groups: np.ndarray | None, *, bootstrap: int, seed: int
) -> dict:
    """For each system of two or more modalities: its UA minus the UA of the best of its modalities
    alone (the highest UA over all items), on the items both label, with a paired bootstrap interval.

    Returns:
        ``{system key: {"reference": name, "n", "ua_difference", "ua_difference_ci": [low, high]}}``.
    """
    alone = {s.modalities[0]: s for s in systems if s.kind == "modality" and "ua" in scores[s.key]}
    names = np.asarray(EMOTIONS, dtype=object)
    out = {}
    for system in systems:
        candidates = [m for m in system.modalities if m in alone]
        if len(system.modalities) < 2 or not candidates:
            continue
        reference = alone[max(candidates, key=lambda m: scores[alone[m].key]["ua"])]
        rows = system.present & reference.present
        if not rows.any():
            continue
        difference, interval = M.paired_difference(
            labels[rows], names[system.probabilities[rows].argmax(axis=1)], names[reference.probabilities[rows].argmax(axis=1)],
            labels=EMOTIONS, groups=None if groups is None else groups[rows], n_resamples=bootstrap, seed=seed,
        )
        out[system.key] = {
            "reference": reference.name, "n": int(rows.sum()), "ua_difference": difference, "ua_difference_ci": list(interval)
        }
    return out


def evaluate_predictions(predictions: Predictions, out_dir: str | os.PathLike, **options) -> dict:
    """:func:`compare_predictions` (same keyword options), written into ``out_dir`` as
    ``metrics.json``, ``metrics.md`` and ``comparison.png`` (see :func:`write_report`)."""
    result = compare_predictions(predictions, **options)
    write_report(result, out_dir)
    return result


def compare_predictions(
    predictions: Predictions,
    *,
    folds: int = 5,
    seed: int = 0,
    by_group: bool = False,
    by_presence: bool = False,
    bootstrap: int = 1000,
    fusions: Sequence[str] = FUSION_SYSTEMS,
    attention_options=None,
    return_probabilities: bool = False,
) -> dict:
    """Compare each modality, each set of modalities and each fusion on cross-fitted predictions.

    Args:
        predictions: from :func:`predict_manifest`.
        folds: group k-fold folds for everything learned (>= 2); with fewer groups, leave-one-group-out,
            and with a single group nothing learned is scored (see :func:`plan_folds`).
        seed: fold assignment, attention training and the bootstrap.
        by_group: also score every system on each ``group`` value.
        by_presence: also score every system on the items of each presence pattern (which of the
            modalities the item has, e.g. ``audio+text`` or ``face``), for data that mixes sources.
        bootstrap: bootstrap resamples for the 95% intervals (>= 1).
        fusions: which fusions to score, a subset of :data:`FUSION_SYSTEMS`: ``default`` (the packaged
            default as shipped), ``late_equal`` (equal weights, no priors: the old default),
            ``late_learned`` (stacked on the other folds), ``attention`` (trained on the other folds).
        attention_options: :class:`~multimodal_ser.attention_fusion.AttentionOptions` for the
            attention fusion trained in each fold (None: the defaults, without the voice
            embedding when several voice heads made it).
        return_probabilities: also return every system's out-of-fold probabilities ``(n, 7)``
            under ``probabilities`` (``{key: array}``; not written by :func:`write_report`).

    Returns:
        The content of ``metrics.json``: ``labels``, ``modalities``, ``n_items``, ``n_failed``,
        ``failures``, ``folds``, ``seed``, ``bootstrap``, ``n_groups``, ``fold_sizes``, ``models``,
        ``systems`` (``{key: {name, kind, modalities, n, coverage, ua, ua_ci, wa, wa_ci, macro_f1,
        macro_f1_ci, recall, confusion, ece, ...}}`` with keys like ``audio``,
        ``default:audio+text``, ``late_equal:audio+text``, ``late_learned:audio+text``, ``attention:audio+text``),
        ``gains`` (each multi-modality system's UA over its best single modality, see
        :func:`_gains_over_best_alone`),
        ``by_group`` (``{group: {key: metrics}}``) and ``by_presence``
        (``{pattern: {"n_items": int, "systems": {key: metrics}}}``) when asked, and ``runtime_s``.
    """
    folds = _valid_positive_int("folds", folds, 2)
    bootstrap = _valid_positive_int("bootstrap", bootstrap)
    unknown = set(fusions) - set(FUSION_SYSTEMS)
    if unknown:
        raise ValueError(f"fusions must be among {', '.join(FUSION_SYSTEMS)}, not {sorted(unknown)}")
    began = time.monotonic()
    table = predictions.table
    if table.empty:
        raise MserError("no item could be predicted; nothing to evaluate")
    modalities = predictions.modalities
    labels = table["label"].to_numpy(dtype=object)
    group_values = table["group"].to_numpy(dtype=object)
    own_groups = all(str(g).startswith("item-") for g in group_values)
    if own_groups:
        log.warning("the manifest has no group column: every item is its own group, so splits cannot keep speakers apart")
    n_groups = len(set(group_values))
    used_folds, folds_note = plan_folds(n_groups, folds)
    if folds_note:
        log.warning("%s", folds_note)
    fold = None if used_folds is None else group_folds(group_values, folds=used_folds, seed=seed)
    systems: list[_System] = []
    for m in modalities:
        probabilities, present = modality_probabilities(table, m)
        systems.append(_System(m, f"{m} alone", "modality", (m,), np.where(present[:, None], probabilities, np.nan), present))
    notes = [folds_note] if folds_note else []
    attention = {}
    if "attention" in fusions and len(modalities) >= 2:
        if n_groups >= MIN_GROUPS_ATTENTION:
            options = _attention_options(attention_options, predictions)
            attention = _cross_fit_attention(table, labels, fold, modalities, seed=seed, options=options)
        else:
            notes.append(f"attention fusion is not scored: it needs at least {MIN_GROUPS_ATTENTION} groups, found {n_groups}")
    default = _packaged_default(fusions)
    priors = _priors(default) if "late_learned" in fusions else {}
    for subset in _subsets(modalities):
        if default is not None:
            systems.append(_as_shipped(default, table, subset, modalities))
        if {"late_equal", "late_learned"} & set(fusions):
            equal, learned = _cross_fit_late(table, labels, fold, subset, priors)
            if "late_equal" in fusions:
                systems.append(equal)
            if "late_learned" in fusions and learned is not None:
                systems.append(learned)
        if subset in attention:
            systems.append(attention[subset])
    bootstrap_groups = None if own_groups else group_values
    result: dict = {
        "labels": list(EMOTIONS),
        "modalities": list(modalities),
        "n_items": len(table),
        "n_failed": len(predictions.failures),
        "failures": predictions.failures,
        "warnings": list(predictions.warnings),
        "folds": used_folds,
        "folds_requested": folds,
        "notes": notes,
        "seed": seed,
        "bootstrap": bootstrap,
        "bootstrap_unit": "item" if own_groups else "group",
        "n_groups": int(len(set(group_values))),
        "fold_sizes": [] if fold is None else np.bincount(fold, minlength=used_folds).tolist(),
        "models": predictions.model_ids,
        "package_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "systems": {s.key: _score(s, labels, bootstrap_groups, bootstrap=bootstrap, seed=seed) for s in systems},
    }
    result["gains"] = _gains_over_best_alone(systems, result["systems"], labels, bootstrap_groups, bootstrap=bootstrap, seed=seed)
    text_sources = table["text_source"].value_counts(dropna=True).to_dict() if "text" in modalities else {}
    if text_sources:
        result["text_sources"] = {str(k): int(v) for k, v in text_sources.items()}
    if by_group:
        result["by_group"] = {}
        for g in sorted(set(group_values)):
            inside = group_values == g
            result["by_group"][str(g)] = {
                s.key: _score(_subset_system(s, inside), labels[inside], None, bootstrap=bootstrap, seed=seed) for s in systems
            }
    if by_presence:
        masks = np.stack([modality_probabilities(table, m)[1] for m in modalities], axis=1)
        patterns = np.array(["+".join(m for m, p in zip(modalities, row) if p) or "none" for row in masks], dtype=object)
        result["by_presence"] = {}
        for pattern in sorted(set(patterns)):
            inside = patterns == pattern
            rows_groups = None if own_groups else group_values[inside]
            result["by_presence"][pattern] = {
                "n_items": int(inside.sum()),
                "systems": {
                    s.key: _score(_subset_system(s, inside), labels[inside], rows_groups, bootstrap=bootstrap, seed=seed)
                    for s in systems
                },
            }
    if return_probabilities:
        result["probabilities"] = {s.key: s.probabilities for s in systems}
    result["runtime_s"] = round(time.monotonic() - began, 1)
    return result


def _attention_options(options, predictions: Predictions):
    """The attention settings; the voice embedding is left out when several voice heads made it
    (cross-fitted heads: each head's hidden layer is a space of its own)."""
    from .attention_fusion import AttentionOptions

    n_heads = len(predictions.model_ids.get("audio", {}).get("voice", {}))
    if options is None:
        options = AttentionOptions()
        if n_heads > 1:
            log.info("%d voice heads made the audio embeddings: attention fusion reads the voice's probabilities only", n_heads)
            options = dataclasses.replace(options, embeddings=tuple(m for m in options.embeddings if m != "audio"))
    elif n_heads > 1 and "audio" in options.embeddings:
        log.warning("attention fusion reads audio embeddings made by %d different voice heads: their spaces differ", n_heads)
    return options


def _subset_system(system: _System, rows: np.ndarray) -> _System:
    return dataclasses.replace(
        system,
        probabilities=system.probabilities[rows],
        present=system.present[rows],
        uncalibrated=None if system.uncalibrated is None else system.uncalibrated[rows],
        calibrated=None if system.calibrated is None else system.calibrated[rows],
        parameters={},
    )


def evaluate_manifest(
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    modalities: Sequence[str] = MODALITIES,
    folds: int = 5,
    seed: int = 0,
    by_group: bool = False,
    bootstrap: int = 1000,
    asr_model: str = "base",
    language: str | None = None,
    images_are_face_crops: bool = False,
    fps: float = 4.0,
    audio_head: str | os.PathLike | Mapping[str, str | os.PathLike] | None = None,
    text_head: str | os.PathLike | None = None,
    threads: int = 2,
    use_cache: bool = True,
    progress: bool = True,
) -> dict:
    """``mser evaluate``: :func:`predict_manifest` then :func:`evaluate_predictions` (see both).

    Returns:
        The content of ``metrics.json`` (also written, with ``metrics.md`` and ``comparison.png``,
        into ``out_dir``), including ``manifest`` and the total ``runtime_s``.
    """
    began = time.monotonic()
    table, _ = _load_manifest(manifest)  # cheap: say how the groups will be used before any encoding
    groups = [str(g) if isinstance(g, str) and g.strip() else f"item-{i}" for i, g in enumerate(table["group"])]
    used, note = plan_folds(len(set(groups)), folds)
    log.info("%d items, %d groups: %s", len(table), len(set(groups)), note or f"{used}-fold group cross-fitting")
    predictions = predict_manifest(
        manifest, modalities=modalities, asr_model=asr_model, language=language, images_are_face_crops=images_are_face_crops,
        fps=fps, audio_head=audio_head, text_head=text_head, threads=threads, use_cache=use_cache, progress=progress,
    )
    result = evaluate_predictions(predictions, out_dir, folds=folds, seed=seed, by_group=by_group, bootstrap=bootstrap)
    result["manifest"] = predictions.model_ids.get("manifest")
    result["runtime_s"] = round(time.monotonic() - began, 1)
    write_report(result, out_dir)
    return result


# --- the report ------------------------------------------------------------------------------------


def write_report(result: dict, out_dir: str | os.PathLike) -> Path:
    """Write ``metrics.json``, ``metrics.md`` and ``comparison.png`` of an evaluation into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output(out_dir / "metrics.json") as tmp:
        written = {k: v for k, v in result.items() if k != "probabilities"}
        tmp.write_text(json.dumps(written, indent=2, default=_json_default) + "\n")
    with atomic_output(out_dir / "metrics.md") as tmp:
        tmp.write_text(markdown_report(result))
    with atomic_output(out_dir / "comparison.png") as tmp:
        _plot(result, tmp)
    return out_dir


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


_TABLE_COLUMNS = ("n", "coverage", "ua", "ua_ci", "wa", "wa_ci", "macro_f1", "macro_f1_ci", "ece")


def markdown_report(result: dict) -> str:
    """The comparison as Markdown: the main table (one row per modality / fusion), fusion
    parameters, calibration, confusion matrices and, when present, per-group UA."""
    systems = result["systems"]
    lines = [
        "# Modality and fusion comparison",
        "",
        f"{result['n_items']} items ({result['n_failed']} failed and left out), {result['n_groups']} groups, "
        + (f"{result['folds']}-fold group cross-fitting (fold sizes {result['fold_sizes']})" if result.get("folds")
           else "no cross-fitting (one group)")
        + f", seed {result['seed']}; 95% intervals from {result['bootstrap']} bootstrap resamples of whole {result['bootstrap_unit']}s.",
        "Every learned fusion is fitted on other groups than the ones it is scored on; the default fusion is scored as "
        "shipped (its card says what it was learned on). `n` = items the system gives a label to; `coverage` = n / items.",
        "",
    ]
    lines += [f"**Note:** {note}" for note in result.get("notes", [])] + ([""] if result.get("notes") else [])
    lines += [f"**Warning:** {w}" for w in result.get("warnings", [])] + ([""] if result.get("warnings") else [])
    if result.get("manifest"):
        lines += [f"Manifest: `{result['manifest'].get('path', result['manifest'].get('source'))}`", ""]
    if result.get("text_sources"):
        lines += [f"Text read from: {result['text_sources']}", ""]
    rows = {v["name"]: v for v in systems.values()}
    lines += [M.markdown_table(rows, columns=list(_TABLE_COLUMNS), index_name="system"), ""]
    if result.get("gains"):
        lines += [
            "## What fusion adds: UA minus the UA of the best of its modalities alone",
            "",
            "On the items both label; 95% interval from resampling both systems together (paired bootstrap).",
            "",
            M.markdown_table(
                {
                    systems[key]["name"]: {"best alone": g["reference"], "n": g["n"], "UA difference": g["ua_difference"],
                                           "95% CI": g["ua_difference_ci"]}
                    for key, g in result["gains"].items()
                },
                columns=["best alone", "n", "UA difference", "95% CI"],
                index_name="system",
            ),
            "",
        ]
    learned = {k: v for k, v in systems.items() if v["kind"] == "late_learned" and "parameters" in v}
    if learned:
        lines += ["## Learned late-fusion weights (mean over folds; the most reliable modality has weight 1)", ""]
        table = {
            v["name"]: {
                **{m: v["parameters"]["weights_mean"][m] for m in v["modalities"]},
                "T (mean)": float(np.mean([t for t in v["parameters"]["temperature_per_fold"] if t is not None])),
            }
            for v in learned.values()
        }
        lines += [M.markdown_table(table, columns=[*result["modalities"], "T (mean)"], index_name="system"), ""]
    calibration = {
        v["name"]: {"ECE before": v.get("ece_uncalibrated"), "ECE after": v.get("ece_temperature_scaled", v.get("ece"))}
        for v in systems.values()
        if "ece_uncalibrated" in v
    }
    if calibration:
        lines += [
            "## Calibration (expected calibration error, 15 bins)",
            "",
            "Before: T = 1. After: the temperature fitted on the training folds (for equal weights, "
            "temperature scaling with the weights kept at 1.0).",
            "",
            M.markdown_table(calibration, columns=["ECE before", "ECE after"], index_name="system"),
            "",
        ]
    lines += ["## Confusion matrices (rows = truth)", ""]
    for v in systems.values():
        if "confusion" in v:
            lines += [f"### {v['name']}", "", M.markdown_confusion(v["confusion"], labels=result["labels"]), ""]
    if result.get("by_group"):
        lines += ["## Unweighted accuracy per group", ""]
        keys = list(systems)
        table = {g: {systems[k]["name"]: metrics.get(k, {}).get("ua") for k in keys} for g, metrics in result["by_group"].items()}
        lines += [M.markdown_table(table, columns=[systems[k]["name"] for k in keys], index_name="group"), ""]
    if result.get("by_presence"):
        lines += ["## Unweighted accuracy per presence pattern (which modalities the items have)", ""]
        keys = list(systems)
        table = {
            f"{p} (n={part['n_items']})": {systems[k]["name"]: part["systems"][k].get("ua") for k in keys}
            for p, part in result["by_presence"].items()
        }
        lines += [M.markdown_table(table, columns=[systems[k]["name"] for k in keys], index_name="items with"), ""]
    if result.get("failures"):
        lines += ["## Failed items", ""]
        lines += [f"- `{f['path']}` (line {f['line']}): {f['reason']}" for f in result["failures"]] + [""]
    return "\n".join(lines)


def _plot(result: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: the Agg canvas, no global state

    scored = [v for v in result["systems"].values() if "ua" in v]
    names = [v["name"] for v in scored]
    figure = Figure(figsize=(9, 0.45 * len(scored) + 1.6))
    axes = figure.add_subplot()
    y = np.arange(len(scored))
    height = 0.38
    for shift, metric, colour in ((-height / 2, "ua", "tab:blue"), (height / 2, "macro_f1", "tab:orange")):
        values = np.array([v[metric] for v in scored])
        low = values - np.array([v[f"{metric}_ci"][0] for v in scored])
        high = np.array([v[f"{metric}_ci"][1] for v in scored]) - values
        axes.barh(y + shift, values, height, xerr=[np.maximum(low, 0), np.maximum(high, 0)], color=colour,
                  capsize=3, label={"ua": "unweighted accuracy", "macro_f1": "macro-F1"}[metric])
    axes.set_yticks(y, names)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    folds = f"{result['folds']}-fold group cross-fitting" if result.get("folds") else "one group, nothing learned"
    axes.set_xlabel(f"score (95% bootstrap interval), {result['n_items']} items, {folds}")
    axes.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    with open(path, "wb") as f:
        figure.savefig(f, format="png", dpi=110)
