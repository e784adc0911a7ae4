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
     moves most, else the largest: its mean probabilities, and its ``face_quality``, which fusion
     reads as in the pipeline); absent when no face is seen.

   A modality the file cannot have (audio of an image, face of an audio file) is absent, not an
   error. A row whose media file does not exist but that has ``text`` is a text-only item. An item
   that fails (unreadable media, ...) is logged with its path and reason and counted in
   ``failures``; it is left out of every score, so all systems are compared on the same items.
   What each pass computes is cached under ``weights.cache_dir()/evaluate`` keyed by the file's
   sha256, ``start``, ``end`` and the model ids: the voice features (so that another voice head
   needs no new encoder pass), the ASR transcript, the text and face outputs. A re-run is fast.

2. :func:`~multimodal_ser.comparison.compare_predictions` (in :mod:`multimodal_ser.comparison`;
   :func:`evaluate_predictions` also writes the report): each modality alone, and for every set of
   two or more modalities each fusion, learned on some groups and measured on others.

The predictions must be held out from what trained the branches: evaluating the packaged voice
head on the RAVDESS actors it was trained on measures memory, not recognition. The report warns
when that happens (:attr:`Predictions.warnings`); give ``audio_head`` a head trained on other
speakers, or one per group (``mser evaluate --cross-fit-audio``,
:func:`multimodal_ser.training.fusion.cross_fitted_voice_heads`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .comparison import (  # noqa: F401  (re-exported: stage 2 lives in comparison.py)
    FUSION_SYSTEMS,
    Predictions,
    _valid_positive_int,
    compare_predictions,
    evaluate_predictions,
    group_folds,
    markdown_report,
    plan_folds,
    write_report,
)
from .errors import MediaError, ModelError, MserError
from .files import atomic_output, sha256_file
from .fusion import valid_modalities as _valid_modalities
from .grid import make_grid, modality_table
from .labels import EMOTIONS, MODALITIES
from .evaluation.manifest import read_manifest
from .media import SAMPLE_RATE, VIDEO_EXTENSIONS

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
"""Files the face branch reads as still images."""

PREDICTION_RECIPE = "evaluate-items/v2-level-normalised"
"""Version of the per-item recipe above; part of every cache key."""

MAX_WINDOW_SECONDS = 30.0
"""An item longer than this is encoded in several equal windows."""


# --- stage 1: per-item predictions ---------------------------------------------------------------


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
    quality: float | None = None
    """the face's ``face_quality`` on a video item (frames seen, static face); None elsewhere (1 in fusion)."""

    @property
    def present(self) -> bool:
        return self.probabilities is not None

    def arrays(self) -> dict:
        if not self.present:
            return {"present": np.array(False)}
        out = {"present": np.array(True), "probabilities": self.probabilities, "embedding": self.embedding}
        if self.quality is not None:
            out["quality"] = np.array(self.quality)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict) -> _Branch:
        if not bool(arrays["present"]):
            return cls()
        quality = float(arrays["quality"]) if "quality" in arrays else None
        return cls(np.asarray(arrays["probabilities"], dtype=np.float64), np.asarray(arrays["embedding"], dtype=np.float32), quality)


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
    return _Branch(probabilities, np.asarray(table["face_embedding"].iloc[0], dtype=np.float32), float(table["face_quality"].iloc[0]))


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
    """A warning per voice head that is applied to clips of speakers it was trained on (RAVDESS,
    TurEV-DB or URDU file names of a speaker in its config's ``training.speakers``): on them it
    recalls, it does not recognise."""
    from .evaluation.datasets import corpus_speaker

    heard: dict[str, set] = {}
    counts: dict[str, int] = {}
    for path, group in zip(table["path"], table["group"]):
        speaker = corpus_speaker(Path(path).stem)
        if speaker is None:
            continue
        head = heads.get(str(group), heads.get(None))
        if speaker in models.voice(head).config.get("training", {}).get("speakers", []):
            name = "the packaged voice head" if head is None else f"voice head {head}"
            heard.setdefault(name, set()).add({"ravdess": "RAVDESS", "turev-db": "TurEV-DB", "urdu": "URDU"}[speaker.split(":")[0]])
            counts[name] = counts.get(name, 0) + 1
    return [
        f"{counts[name]} items are {'/'.join(sorted(corpora))} clips of speakers {name} was trained on: its scores on them "
        "(and every fusion with audio) measure memory, not recognition. For RAVDESS, use voice heads trained without "
        "each actor (mser evaluate --cross-fit-audio DATA_DIR); for the others, mser crossval."
        for name, corpora in heard.items()
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
    from .voice import SHARED_SPACE

    probs8, embedding = model.probabilities(features)
    return probs8 @ SHARED_SPACE, embedding.astype(np.float64)


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
        if any(b.quality is not None for b in branches):  # video faces: the weight fusion gives them
            quality = [(1.0 if b.quality is None else b.quality) if b.present else np.nan for b in branches]
            tables.append(pd.DataFrame({f"{m}_quality": np.asarray(quality, dtype=np.float64)}))
    return pd.concat(tables, axis=1)


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
