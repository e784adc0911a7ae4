"""Stage 1 of ``mser evaluate``, per item: each requested branch run once on one manifest row.

- **audio**: the item's samples (``start``..``end``; longer than :data:`MAX_WINDOW_SECONDS` in
  several equal windows) are encoded once per window by the shared
  :class:`~multimodal_ser.encoder.SpeechEncoder`; the voice features
  (:func:`multimodal_ser.voice.segment_features`) are read over the span from the first to the
  last speech region that voice activity detection finds in the window (the whole window when it
  finds none), as the pipeline reads a VAD/ASR segment. Items of at most
  :data:`~multimodal_ser.encoder.MAX_PACKED_SECONDS` can be encoded several at a time
  instead, nearly as alone (:meth:`ItemRunner.prepare`, :mod:`multimodal_ser.evaluation.packed`). The voice head is applied later
  (:mod:`multimodal_ser.evaluation.predict`), so the cache keeps :class:`VoiceFeatures`.
- **text**: the row's ``text`` when given, else the ASR transcript of the SAME encoded windows.
- **face**: images through :meth:`~multimodal_ser.face.FaceAnalyzer.analyze_image` (the largest
  face), videos through :meth:`~multimodal_ser.face.FaceAnalyzer.analyze` reduced to the item's
  ``start``..``end`` by :func:`~multimodal_ser.face.face_segment_table`; absent when no face is seen.

A modality the file cannot have (audio of an image, face of an audio file) is absent, not an
error. A row whose media file does not exist but that has ``text`` is a text-only item.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import MediaError
from ..grid import make_grid
from ..labels import EMOTIONS
from ..media import SAMPLE_RATE, VIDEO_EXTENSIONS
from ..registry import Models
from .cache import PredictionCache, file_key

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
"""Files the face branch reads as still images."""

MAX_WINDOW_SECONDS = 30.0
"""An item longer than this is encoded in several equal windows."""


@dataclasses.dataclass
class BranchOutput:
    """One modality's output for one item."""

    probabilities: np.ndarray | None = None
    """shape ``(7,)`` over :data:`~multimodal_ser.labels.EMOTIONS`, or None when the modality is absent."""
    embedding: np.ndarray | None = None
    """shape ``(d,)`` float32: the branch's embedding (None when absent)."""
    quality: float | None = None
    """the face's ``face_quality`` on a video item (frames seen, static face); None elsewhere (1 in fusion)."""

    @property
    def present(self) -> bool:
        return self.probabilities is not None

    def arrays(self) -> dict[str, np.ndarray]:
        """The output as arrays for :meth:`PredictionCache.put`."""
        if not self.present:
            return {"present": np.array(False)}
        out = {"present": np.array(True), "probabilities": self.probabilities, "embedding": self.embedding}
        if self.quality is not None:
            out["quality"] = np.array(self.quality)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> BranchOutput:
        """The output :meth:`arrays` stored."""
        if not bool(arrays["present"]):
            return cls()
        quality = float(arrays["quality"]) if "quality" in arrays else None
        return cls(np.asarray(arrays["probabilities"], dtype=np.float64), np.asarray(arrays["embedding"], dtype=np.float32), quality)


@dataclasses.dataclass(frozen=True)
class VoiceFeatures:
    """The voice features of one item, one row per encoder window, before any voice head."""

    features: np.ndarray
    """shape ``(n_windows, F)`` float32: :func:`multimodal_ser.voice.segment_features` of each window's speech span."""
    weights: np.ndarray
    """shape ``(n_windows,)``: seconds of speech in each window's span (how much its row counts)."""

    @property
    def empty(self) -> bool:
        """No window (a video without sound)."""
        return len(self.weights) == 0

    def arrays(self) -> dict[str, np.ndarray]:
        return {"features": self.features, "weights": self.weights}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> VoiceFeatures:
        return cls(arrays["features"], arrays["weights"])


NO_VOICE = VoiceFeatures(np.zeros((0, 0), np.float32), np.zeros(0))
"""The voice features of an item without sound."""


@dataclasses.dataclass
class ItemPrediction:
    """What the branches gave for one manifest row."""

    index: int
    """the row's position in the manifest."""
    group: object
    """the row's ``group`` as the manifest has it (None or blank when it has none)."""
    kind: str
    """``audio``, ``video``, ``image``, or ``none`` (no media file: a text-only item)."""
    branches: dict[str, BranchOutput] = dataclasses.field(default_factory=dict)
    """per modality; ``audio`` is filled in once a voice head has read :attr:`voice`."""
    voice: VoiceFeatures | None = None
    """the voice features when the audio branch ran (None otherwise)."""
    text: str | None = None
    """what the text branch reads (None: no text branch for this item)."""
    text_source: str | None = None
    """``manifest`` or ``asr`` (None with no text)."""
    text_language: str | None = None
    """the language the ASR wrote the text in (told or detected; None for a manifest's text)."""


@dataclasses.dataclass(frozen=True)
class Transcript:
    """An item's ASR text."""

    text: str
    language: str | None
    """the language it was decoded in (the option, else detected on the item); None: no sound to decode."""


def _item_audio(path: Path, start: float, end: float, memo: dict) -> np.ndarray | None:
    """The item's mono samples at 16 kHz (None for a file without sound); the last decoded file is kept for rows that share it."""
    from ..media import load_audio, probe

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


def _speech_span(models: Models, samples: np.ndarray, offset: float) -> tuple[float, float]:
    """From the first to the last VAD speech region of ``samples`` (seconds, recording clock); all of it if none."""
    extent = models.vad().extent(samples)
    start, end = extent if extent is not None else (0.0, len(samples) / SAMPLE_RATE)
    return offset + start, offset + end


def _speech_passes(
    models: Models, samples: np.ndarray, start: float, *, want_features: bool, want_asr: bool, only: Collection[str] | None = None
) -> tuple[VoiceFeatures | None, Transcript | None]:
    """Encode the item once per window; voice features and/or the ASR transcript from the same
    passes (with ``only``, its language's words only when it is one of them)."""
    from ..voice import segment_features, segment_span

    n_windows = int(np.ceil(len(samples) / (MAX_WINDOW_SECONDS * SAMPLE_RATE)))
    edges = np.linspace(0, len(samples), n_windows + 1).astype(int)
    encoder = models.encoder()
    features, weights, texts = [], [], []
    if want_asr:
        models.transcriber().new_recording()  # each item's language is its own
    for first, last in zip(edges[:-1], edges[1:]):
        piece = samples[first:last]
        offset = start + first / SAMPLE_RATE
        encoded = encoder.encode(piece, offset=offset)
        if want_features:
            span_start, span_end, _ = segment_span(encoded, *_speech_span(models, piece, offset))
            features.append(segment_features(encoded, span_start, span_end))
            weights.append(span_end - span_start)
        if want_asr and (only is None or models.transcriber().detect_language(encoded) in only):
            texts += [s.text.strip() for s in models.transcriber().transcribe(encoded)]
    voice = VoiceFeatures(np.stack(features), np.asarray(weights)) if want_features else None
    return voice, (Transcript(" ".join(t for t in texts if t), models.transcriber().language) if want_asr else None)


def _face_branch(models: Models, path: Path, start: float, end: float, memo: dict) -> BranchOutput:
    from ..face import face_segment_table

    analyzer = models.face()
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        frames = analyzer.analyze_image(path, cropped=memo["crops"])
        faces = frames[frames["face_present"].astype(bool)]
        if faces.empty:
            return BranchOutput()
        face = faces.sort_values("face_id").iloc[0]  # analyze_image numbers faces largest first
        probabilities = face[[f"face_{label}" for label in EMOTIONS]].to_numpy(dtype=np.float64)
        return BranchOutput(probabilities / probabilities.sum(), np.asarray(face["face_embedding"], dtype=np.float32))
    if memo.get("path") != path:
        from ..media import probe

        memo.update(path=path, frames=analyzer.analyze(path), duration=probe(path).duration)
    grid = make_grid([0.0 if np.isnan(start) else start], [memo["duration"] if np.isnan(end) else end])
    table = face_segment_table(memo["frames"], grid)
    if not bool(table["face_present"].iloc[0]):
        return BranchOutput()
    probabilities = table[[f"face_{label}" for label in EMOTIONS]].iloc[0].to_numpy(dtype=np.float64)
    return BranchOutput(probabilities, np.asarray(table["face_embedding"].iloc[0], dtype=np.float32), float(table["face_quality"].iloc[0]))


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What :class:`ItemRunner` will do with one manifest row."""

    path: Path
    start: float
    end: float
    kind: str
    key: str | None
    """the file's sha256 (None without a file)."""
    given_text: str
    want_audio: bool
    want_asr: bool


class ItemRunner:
    """Runs the requested branches on one manifest row at a time, through the cache.

    Args:
        models: where the models come from.
        cache: the prediction cache.
        ids: the cache-key ids of each pass: ``audio`` (``encoder``, ``features``), ``asr``, ``face``.
        modalities: the branches to run.
        images_are_face_crops: classify whole images instead of detecting faces in them.
        pack: let :meth:`prepare` encode short items several to a window (:mod:`.packed`).
        asr_languages: decode the words of items in these languages only (the text head's: the
            others would feed nothing); their language is still detected. None: every item's.
    """

    def __init__(self, models: Models, cache: PredictionCache, ids: dict, modalities: tuple[str, ...], *,
                 images_are_face_crops: bool, pack: bool, asr_languages: Collection[str] | None = None):
        self.models, self.cache, self.ids, self.modalities, self.pack = models, cache, ids, modalities, pack
        self.asr_languages = asr_languages
        self.hashes: dict = {}
        self.audio_memo: dict = {}
        self.face_memo: dict = {"crops": images_are_face_crops}
        self.packed: dict[int, tuple[VoiceFeatures | None, Transcript | None]] = {}
        """``{row index: (voice features, transcript)}`` computed by :meth:`prepare`, taken by :meth:`run`."""

    def _plan(self, row: pd.Series) -> _Plan:
        path = Path(row["path"])
        given_text = row["text"] if isinstance(row["text"], str) else ""
        if not path.is_file():
            if not (given_text.strip() and "text" in self.modalities):
                raise MediaError(f"{path}: no such file")
            kind, key = "none", None
        else:
            suffix = path.suffix.lower()
            kind = "image" if suffix in IMAGE_EXTENSIONS else "video" if suffix in VIDEO_EXTENSIONS else "audio"
            key = file_key(path, self.hashes)
        speech = kind in ("audio", "video")
        return _Plan(
            path, float(row["start"]), float(row["end"]), kind, key, given_text,
            want_audio="audio" in self.modalities and speech,
            want_asr="text" in self.modalities and speech and not given_text.strip(),
        )

    def prepare(self, rows: Sequence[tuple[int, pd.Series]]) -> None:
        """Encode the short items of ``rows`` (``(row index, row)``) whose speech passes are not
        cached, several at a time, for :meth:`run` to take; nothing without ``pack``.

        An item that cannot be read here is left to :meth:`run`, which reports why.
        """
        from ..loudness import normalise_loudness
        from ..encoder import MAX_PACKED_SECONDS
        from .packed import Clip, packed_passes

        if not self.pack:
            return
        pieces, wants, indices = [], [], []
        for index, row in rows:
            try:
                plan = self._plan(row)
                voice, transcript, _, _ = self._cached_speech(plan)
                want_features, want_asr = plan.want_audio and voice is None, plan.want_asr and transcript is None
                if not (want_features or want_asr):
                    continue
                samples = _item_audio(plan.path, plan.start, plan.end, self.audio_memo)
            except Exception:  # run() meets the same error and reports it
                continue
            if samples is None or len(samples) > MAX_PACKED_SECONDS * SAMPLE_RATE:
                continue
            pieces.append(samples)
            wants.append((want_features, want_asr))
            indices.append(index)
        normalise = self.models.encoder().normalise
        clips = [
            Clip(normalise_loudness(samples) if normalise else samples, speech or (0.0, len(samples) / SAMPLE_RATE), *want)
            for samples, speech, want in zip(pieces, self.models.vad().extents(pieces), wants, strict=True)
        ]
        for index, result in zip(indices, packed_passes(self.models, clips, only=self.asr_languages), strict=True):
            voice = None if result.features is None else VoiceFeatures(result.features[None], np.array([result.seconds]))
            self.packed[index] = (voice, result.transcript)

    def run(self, row: pd.Series, index: int) -> ItemPrediction:
        """The item's branch outputs (the voice as features: the head is applied afterwards).

        Raises:
            MediaError and others: a bad item (the caller counts it as failed).
        """
        plan = self._plan(row)
        item = ItemPrediction(index=index, group=row["group"], kind=plan.kind)
        item.voice, transcript = self._speech(plan, self.packed.pop(index, None))
        if "text" in self.modalities:
            if plan.given_text.strip():
                item.text, item.text_source = plan.given_text, "manifest"
            elif plan.want_asr:
                item.text, item.text_source, item.text_language = transcript.text, "asr", transcript.language
        if "face" in self.modalities:
            face = plan.kind in ("image", "video")
            item.branches["face"] = self._face(plan.path, plan.key, plan.start, plan.end) if face else BranchOutput()
        return item

    def _cached_speech(self, plan: _Plan) -> tuple[VoiceFeatures | None, Transcript | None, str | None, str | None]:
        """``(voice features, transcript, features key, ASR key)``: what the cache holds (None: not
        wanted or not cached) and where the item's results go."""
        voice, transcript, features_key, asr_key = None, None, None, None
        if plan.want_audio:
            ids = self.ids["audio"]
            features_key = self.cache.key("voice-features", plan.key, plan.start, plan.end, ids["encoder"], ids["features"])
            cached = self.cache.get("voice-features", features_key)
            voice = None if cached is None else VoiceFeatures.from_arrays(cached)
        if plan.want_asr:
            asr_key = self.cache.key("asr", plan.key, plan.start, plan.end, self.ids["asr"])
            cached = self.cache.get("asr", asr_key)
            transcript = None if cached is None else Transcript(str(cached["text"]), str(cached["language"]) or None)
        return voice, transcript, features_key, asr_key

    def _speech(self, plan: _Plan, packed: tuple[VoiceFeatures | None, Transcript | None] | None):
        """Voice features and the ASR transcript: from the cache, from :meth:`prepare`'s ``packed``
        pass, or from one encoder pass per window of the item alone."""
        voice, transcript, features_key, asr_key = self._cached_speech(plan)
        need_features, need_asr = plan.want_audio and voice is None, plan.want_asr and transcript is None
        if not (need_features or need_asr):
            return voice, transcript
        if packed is not None:
            computed_voice, computed_text = packed
        else:
            samples = _item_audio(plan.path, plan.start, plan.end, self.audio_memo)
            if samples is None:  # a video without sound
                computed_voice, computed_text = NO_VOICE, Transcript("", None)
            else:
                offset = 0.0 if np.isnan(plan.start) else plan.start
                computed_voice, computed_text = _speech_passes(
                    self.models, samples, offset, want_features=need_features, want_asr=need_asr, only=self.asr_languages
                )
        if need_features:
            voice = computed_voice
            self.cache.put("voice-features", features_key, **voice.arrays())
        if need_asr:
            transcript = computed_text
            self.cache.put("asr", asr_key, text=np.array(transcript.text), language=np.array(transcript.language or ""))
        return voice, transcript

    def _face(self, path: Path, key, start: float, end: float) -> BranchOutput:
        cache_key = self.cache.key("face", key, start, end, self.ids["face"])
        cached = self.cache.get("face", cache_key)
        if cached is not None:
            return BranchOutput.from_arrays(cached)
        face = _face_branch(self.models, path, start, end, self.face_memo)
        self.cache.put("face", cache_key, **face.arrays())
        return face
