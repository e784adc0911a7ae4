"""The voice branch: emotion from how a segment sounds, reusing the shared speech-encoder pass.

Representation of a segment (:func:`segment_features`), all on the encoder's 50 frames/s grid:

1. the hidden states of every Whisper encoder layer (the convolutional embedding and each block:
   ``(n_layers + 1, n_frames, d_model)`` from :meth:`EncodedWindow.frames`) pooled over the
   segment by their mean and standard deviation per layer, so intermediate layers, where much of
   the emotion lives, are kept;
2. prosodic and spectral statistics of the segment's samples (:mod:`multimodal_ser.prosody`:
   pitch, loudness, speaking rate, voice quality) and MFCC means/standard deviations.

The encoder pass has brought the window to one speech level (:mod:`multimodal_ser.loudness`), so
none of this depends on the recording's gain. The trained head (:class:`VoiceHead`, shipped as
``models/audio_head.safetensors``; see ``models/audio_head.md``; trained on RAVDESS, TurEV-DB
and URDU) standardises these, weights the encoder layers with learned softmax weights, and maps
them to RAVDESS's 8 classes, calibrated by the temperature stored with it; :class:`VoiceEmotionModel` turns those into
probabilities over :data:`~multimodal_ser.labels.EMOTIONS` (calm summed into neutral), arousal and
valence scores, and a fixed-size embedding per segment.

Example::

    encoder = SpeechEncoder(load_openai_whisper("base"))
    window = encoder.encode(audio[: 30 * 16000], offset=0.0)
    voice = VoiceEmotionModel()
    pred = voice.predict(window, [(0.5, 2.8), (3.1, 5.0)])
    pred.emotions.shape, pred.emotions8.shape, pred.arousal.shape, pred.embeddings.shape
    # (2, 7) (2, 8) (2,) (2, 256)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .calibration import apply_temperature
from .encoder import FRAMES_PER_SECOND, EncodedWindow
from .errors import ModelError
from .files import sha256_file
from .heads import MODELS_DIR, load_head
from .labels import EMOTIONS, RAVDESS_8, to_shared_label
from .media import SAMPLE_RATE
from .options import VOICE_REFERENCES
from .prosody import HOP_LENGTH, MFCC_FEATURES, PROSODY_FEATURES, contours, mfcc_stats, prosody_features

log = logging.getLogger(__name__)

DEFAULT_HEAD_PATH = MODELS_DIR / "audio_head.safetensors"
"""The packaged head, trained by ``mser train audio`` (see ``models/audio_head.md``)."""


def packaged_head_path(reference: str = "none") -> Path:
    """The packaged head that reads features against ``reference`` (:data:`~multimodal_ser.options.VOICE_REFERENCES`):
    ``models/audio_head.safetensors``, or ``models/audio_head_collection.safetensors``."""
    if reference not in VOICE_REFERENCES:
        raise ValueError(f"voice reference must be one of {VOICE_REFERENCES}, not {reference!r}")
    return DEFAULT_HEAD_PATH if reference == "none" else MODELS_DIR / f"audio_head_{reference}.safetensors"

FEATURE_RECIPE = "whisper-layers-mean-std+prosody+mfcc/v2-level-normalised"
"""Name of the representation :func:`segment_features` computes; stored in every head's config."""

MIN_SEGMENT_SECONDS = 0.5
"""Segments shorter than this are analysed over a span widened symmetrically to this length (within
the window's audio) and flagged in :attr:`VoicePrediction.widened`: below it there are too few
encoder frames (25) and pitch periods for stable statistics."""

HAND_FEATURES: tuple[str, ...] = PROSODY_FEATURES + MFCC_FEATURES
"""Names of the hand-crafted part of the representation, after the pooled encoder states."""

MIN_COLLECTION = 30
"""Segments a collection needs before its mean is a reference: fewer, and a few clips' own emotion
would be taken for the collection's ground. Random collections of unseen corpora
(``benchmarks/voice_collection_mix.py``) read as well from 16 clips on as from 120, and 1-2 points
worse at 8; 30 leaves a margin for collections less evenly mixed than a corpus."""


def collection_mean(features: np.ndarray) -> np.ndarray:
    """shape ``(n_features,)``: the mean of a collection's :func:`segment_features` rows ``(n, n_features)``;
    an undefined (NaN) statistic is left out of its column's mean, and a column with none is 0."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) == 0:
        raise ValueError(f"a collection's features must have shape (n >= 1, n_features), not {features.shape}")
    with warnings.catch_warnings():  # a column of NaN only: its mean is 0, said above
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nan_to_num(np.nanmean(features, axis=0))


def centre_by_collection(features: np.ndarray, collections: Sequence) -> np.ndarray:
    """``features`` ``(n, n_features)`` with each row's collection mean (:func:`collection_mean`,
    over the rows of that collection, shape ``(n,)`` of names) removed; all-NaN rows (nothing
    encoded) stay NaN and count in no mean."""
    out = np.array(features, dtype=np.float32, copy=True)
    collections = np.asarray(collections, dtype=object)
    encoded = ~np.isnan(out).all(axis=1)
    for name in dict.fromkeys(collections[encoded]):
        rows = encoded & (collections == name)
        out[rows] -= collection_mean(out[rows]).astype(np.float32)
    return out

# Valence and arousal of each RAVDESS class: the NRC VAD Lexicon v1 (Mohammad, ACL 2018) ratings of
# the emotion's name (nouns: happiness, sadness, anger, fear, disgust, surprise; adjectives: neutral,
# calm), rescaled from [0, 1] to [-1, 1] as 2x - 1. These are word ratings of the category, not
# ratings of the recordings: the scores below are category-level estimates.
CIRCUMPLEX: dict[str, tuple[float, float]] = {
    #            valence, arousal
    "neutral": (-0.062, -0.632),  # neutral   0.469 0.184
    "calm": (0.750, -0.800),  # calm      0.875 0.100
    "happy": (0.920, 0.464),  # happiness 0.960 0.732
    "sad": (-0.896, -0.424),  # sadness   0.052 0.288
    "angry": (-0.666, 0.730),  # anger     0.167 0.865
    "fearful": (-0.854, 0.680),  # fear      0.073 0.840
    "disgust": (-0.896, 0.550),  # disgust   0.052 0.775
    "surprised": (0.750, 0.750),  # surprise  0.875 0.875
}
"""``{RAVDESS class: (valence, arousal)}`` in [-1, 1]; arousal/valence scores are expectations under it."""


def segment_span(window: EncodedWindow, start: float, end: float) -> tuple[float, float, bool]:
    """The span analysed for a segment: ``(start, end, widened)`` in recording seconds.

    The segment is clipped to the window's real audio; if it is then shorter than
    :data:`MIN_SEGMENT_SECONDS`, it is widened symmetrically to that length (as far as the window
    allows) and ``widened`` is True.

    Raises:
        ValueError: ``end <= start``, or the segment lies entirely outside the window.
    """
    if not end > start:
        raise ValueError(f"segment end ({end}) must be after its start ({start})")
    w_start, w_end = window.offset, window.offset + window.duration
    if end <= w_start or start >= w_end:
        raise ValueError(f"segment ({start:.2f}, {end:.2f}) s lies outside the window ({w_start:.2f}, {w_end:.2f}) s")
    start, end = max(start, w_start), min(end, w_end)
    if end - start >= MIN_SEGMENT_SECONDS:
        return start, end, False
    centre = (start + end) / 2
    half = min(MIN_SEGMENT_SECONDS, w_end - w_start) / 2
    centre = min(max(centre, w_start + half), w_end - half)
    return centre - half, centre + half, True


def segment_features(window: EncodedWindow, start: float, end: float) -> np.ndarray:
    """The representation of one segment of an encoded window.

    Args:
        window: the encoder pass that covers the segment.
        start, end: the segment, seconds on the recording's clock, inside the window (use
            :func:`segment_span` first to apply the minimum length).

    Returns:
        shape ``(2 * (n_layers + 1) * d_model + len(HAND_FEATURES),)`` float32: per layer the mean
        then the standard deviation of its hidden states over the segment's frames (layer-major:
        ``[mean_0, std_0, mean_1, std_1, ...]``), then :data:`HAND_FEATURES` (NaN where undefined).
    """
    frames = window.frames(start, end).float()  # (L, n, d)
    mean = frames.mean(dim=1)
    std = frames.std(dim=1, unbiased=False)
    pooled = torch.stack([mean, std], dim=1).reshape(-1).numpy()
    first = max(int(round((start - window.offset) * SAMPLE_RATE)), 0)
    last = min(int(round((end - window.offset) * SAMPLE_RATE)), len(window.audio))
    samples = window.audio[first : max(last, first + 1)]
    return np.concatenate([pooled, prosody_features(samples), mfcc_stats(samples)]).astype(np.float32)


class VoiceHead(nn.Module):
    """Segment features -> RAVDESS 8-class logits, as an equal-weight ensemble of two branches.

    Both branches read the standardised features (NaN, i.e. an undefined prosodic statistic, becomes
    0: the training mean):

    - a linear branch over everything (multinomial logistic regression);
    - a small MLP over a learned softmax weighting of the encoder layers' pooled statistics plus the
      hand-crafted features; its hidden layer is the segment's embedding.

    Args:
        n_layers: encoder hidden-state layers in the features (embedding + blocks: 7 for Whisper base).
        d_model: encoder width (512 for Whisper base).
        n_hand: hand-crafted features after the pooled states (:data:`HAND_FEATURES`).
        n_classes: output classes (RAVDESS's 8).
        hidden: MLP width, the embedding size.
        dropout: dropout before the MLP's output layer.
        input_dropout: dropout on the MLP's input.
    """

    def __init__(
        self,
        *,
        n_layers: int,
        d_model: int,
        n_hand: int,
        n_classes: int = len(RAVDESS_8),
        hidden: int = 256,
        dropout: float = 0.5,
        input_dropout: float = 0.2,
    ):
        super().__init__()
        for name, value in (("n_layers", n_layers), ("d_model", d_model), ("n_classes", n_classes), ("hidden", hidden)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, not {value}")
        if n_hand < 0:
            raise ValueError(f"n_hand must be >= 0, not {n_hand}")
        for name, value in (("dropout", dropout), ("input_dropout", input_dropout)):
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), not {value}")
        self.n_layers, self.d_model, self.n_hand = n_layers, d_model, n_hand
        n_in = 2 * n_layers * d_model + n_hand
        self.register_buffer("mean", torch.zeros(n_in))
        self.register_buffer("std", torch.ones(n_in))
        self.linear = nn.Linear(n_in, n_classes)
        self.layer_logits = nn.Parameter(torch.zeros(n_layers))
        self.mlp_in = nn.Sequential(nn.Dropout(input_dropout), nn.Linear(2 * d_model + n_hand, hidden), nn.GELU())
        self.mlp_out = nn.Sequential(nn.Dropout(dropout), nn.Linear(hidden, n_classes))

    @property
    def n_features(self) -> int:
        return self.mean.shape[0]

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, n_features)`` raw features -> standardised, NaN -> 0."""
        return torch.nan_to_num((x - self.mean) / self.std, nan=0.0)

    def layer_weights(self) -> torch.Tensor:
        """shape ``(n_layers,)``: the MLP branch's softmax weights over encoder layers."""
        return torch.softmax(self.layer_logits, dim=0)

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        """Standardised features ``(batch, n_features)`` -> MLP hidden activations ``(batch, hidden)``."""
        n_pooled = 2 * self.n_layers * self.d_model
        pooled = z[:, :n_pooled].reshape(-1, self.n_layers, 2 * self.d_model)
        mixed = (self.layer_weights()[None, :, None] * pooled).sum(dim=1)
        return self.mlp_in(torch.cat([mixed, z[:, n_pooled:]], dim=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw features ``(batch, n_features)`` -> ``(linear logits, MLP logits, embedding)``."""
        z = self.standardise(x)
        embedding = self.embed(z)
        return self.linear(z), self.mlp_out(embedding), embedding

    def probabilities(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(probabilities (batch, n_classes), embedding (batch, hidden))``: the mean of both branches' softmax."""
        linear, mlp, embedding = self(x)
        return (torch.softmax(linear, dim=1) + torch.softmax(mlp, dim=1)) / 2, embedding


@dataclasses.dataclass(frozen=True)
class VoicePrediction:
    """Voice-branch outputs for ``k`` segments, in the order they were given."""

    emotions: np.ndarray
    """shape ``(k, 7)`` float: probabilities over :data:`~multimodal_ser.labels.EMOTIONS` (calm summed into neutral)."""
    emotions8: np.ndarray
    """shape ``(k, 8)`` float: probabilities over :data:`~multimodal_ser.labels.RAVDESS_8`."""
    arousal: np.ndarray
    """shape ``(k,)`` in [-1, 1]: expected arousal under :data:`CIRCUMPLEX` given ``emotions8``."""
    valence: np.ndarray
    """shape ``(k,)`` in [-1, 1]: expected valence under :data:`CIRCUMPLEX` given ``emotions8``."""
    embeddings: np.ndarray
    """shape ``(k, d)`` float32: the head's hidden layer (``d`` = 256 for the packaged head)."""
    widened: np.ndarray
    """shape ``(k,)`` bool: True where the segment was shorter than :data:`MIN_SEGMENT_SECONDS` and a
    widened span was analysed; such predictions rest on neighbouring audio and deserve less trust."""
    features: np.ndarray
    """shape ``(k, n_features)`` float32: the :func:`segment_features` rows the head read (before any
    collection mean was removed)."""

    @property
    def labels(self) -> np.ndarray:
        """shape ``(k,)``: the most probable label of :data:`~multimodal_ser.labels.EMOTIONS` per segment."""
        return np.asarray(EMOTIONS, dtype=object)[self.emotions.argmax(axis=1)] if len(self.emotions) else np.empty(0, dtype=object)


@dataclasses.dataclass(frozen=True)
class VoiceFrames:
    """Frame-level voice features of one span, on the encoder's grid (50 frames/s)."""

    times: np.ndarray
    """shape ``(n,)``: frame centres, seconds on the recording's clock."""
    hidden: np.ndarray
    """shape ``(n, d_model)`` float32: the encoder layers' states mixed with the head's learned layer weights."""
    f0_hz: np.ndarray
    """shape ``(n,)``: F0 in Hz, NaN where unvoiced (:func:`multimodal_ser.prosody.contours`)."""
    rms_db: np.ndarray
    """shape ``(n,)``: frame level in dBFS."""


def _shared_space_matrix() -> np.ndarray:
    """shape ``(8, 7)``: sums RAVDESS-8 probabilities into the shared label space (calm -> neutral)."""
    matrix = np.zeros((len(RAVDESS_8), len(EMOTIONS)))
    for i, name in enumerate(RAVDESS_8):
        matrix[i, EMOTIONS.index(to_shared_label(name))] = 1.0
    return matrix


SHARED_SPACE = _shared_space_matrix()
CIRCUMPLEX_MATRIX = np.array([CIRCUMPLEX[name] for name in RAVDESS_8])
"""shape ``(8, 2)``: (valence, arousal) of each RAVDESS class, rows in :data:`~multimodal_ser.labels.RAVDESS_8` order."""


class VoiceEmotionModel:
    """The trained voice head, applied to segments of an encoded window.

    Args:
        head_path: a head written by :func:`multimodal_ser.training.audio.train_audio_head`; None
            means the packaged one, whose sha256 is checked against ``models/SHA256SUMS``.

    Raises:
        ModelError: the head is missing, corrupt, or was trained on another feature recipe.
    """

    def __init__(self, *, head_path: str | os.PathLike | None = None):
        path = DEFAULT_HEAD_PATH if head_path is None else Path(head_path)
        tensors, config = load_head(path)
        if config.get("recipe") != FEATURE_RECIPE:
            raise ModelError(f"{path}: head was trained on features {config.get('recipe')!r}, this code computes {FEATURE_RECIPE!r}")
        if list(config.get("classes", [])) != list(RAVDESS_8) or list(config.get("hand_features", [])) != list(HAND_FEATURES):
            raise ModelError(f"{path}: head classes or hand-crafted feature list differ from this code's")
        try:
            self.head = VoiceHead(**config["architecture"])
            self.head.load_state_dict(tensors, strict=True)
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise ModelError(f"{path}: tensors do not fit the voice head described in its config ({e})") from e
        self.head.eval()
        self.path = path
        self.config = config
        self.temperature = float(config.get("calibration", {}).get("temperature", 1.0))
        """divides the head's log-probabilities (fitted on held-out speakers; 1.0: uncalibrated)."""
        self.reference = str(config.get("reference", "none"))
        """what the head reads features against (:data:`~multimodal_ser.options.VOICE_REFERENCES`)."""
        if self.reference not in VOICE_REFERENCES:
            raise ModelError(f"{path}: unknown voice reference {self.reference!r} (this code knows {VOICE_REFERENCES})")
        self.sha256 = sha256_file(path)

    @property
    def model_ids(self) -> dict:
        """Provenance for Parquet metadata: head file, its sha256, feature recipe and encoder."""
        return {
            "audio_head": self.path.name,
            "audio_head_sha256": self.sha256,
            "audio_features": FEATURE_RECIPE,
            "audio_encoder": self.config.get("encoder", ""),
            "audio_temperature": self.temperature,
            "audio_reference": self.reference,
        }

    @torch.inference_mode()
    def probabilities(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated RAVDESS-8 probabilities ``(k, 8)`` float64 and embeddings ``(k, d)`` float32 of
        :func:`segment_features` rows ``(k, n_features)``."""
        probs8, embedding = self.head.probabilities(torch.from_numpy(np.asarray(features, dtype=np.float32)))
        return apply_temperature(probs8.double().numpy(), self.temperature), embedding.float().numpy()

    def check_encoder(self, n_layers: int, d_model: int) -> None:
        """Raise ModelError unless an encoder of ``n_layers`` hidden-state layers (embedding included)
        of width ``d_model`` gives the features this head reads."""
        if (n_layers, d_model) != (self.head.n_layers, self.head.d_model):
            raise ModelError(
                f"the voice head expects an encoder with {self.head.n_layers} hidden-state layers of width "
                f"{self.head.d_model} ({self.config.get('encoder', '')}), this Whisper has {n_layers} x {d_model}: "
                "use --asr-model base with the audio branch"
            )

    def _check_window(self, window: EncodedWindow) -> None:
        n_layers, _, d_model = window.hidden_states.shape
        self.check_encoder(n_layers, d_model)

    @torch.inference_mode()
    def frames(self, window: EncodedWindow, start: float, end: float) -> VoiceFrames:
        """Frame-level features between two recording times, for frame-level fusion or plots.

        The encoder frames that :meth:`EncodedWindow.frames` selects, their states mixed with the
        head's layer weights, and F0/level contours computed on the same 20-ms frames.
        """
        self._check_window(window)
        start, end, _ = segment_span(window, start, end)
        states = window.frames(start, end)  # (L, n, d)
        n = states.shape[1]
        first = min(max(int(round((start - window.offset) * FRAMES_PER_SECOND)), 0), window.n_frames - 1)
        mixed = torch.einsum("l,lnd->nd", self.head.layer_weights(), states.float())
        # prosody frames are centred on their first sample + t * hop: start half a hop in to share centres
        origin = first * HOP_LENGTH + HOP_LENGTH // 2
        samples = window.audio[origin : origin + n * HOP_LENGTH]
        c = contours(np.pad(samples, (0, n * HOP_LENGTH - len(samples))))
        return VoiceFrames(
            times=window.offset + (first + 0.5 + np.arange(n)) / FRAMES_PER_SECOND,
            hidden=mixed.numpy().astype(np.float32),
            f0_hz=c.f0_hz[:n],
            rms_db=c.rms_db[:n],
        )

    @torch.inference_mode()
    def predict(self, window: EncodedWindow, segments: Sequence[tuple[float, float]], *,
                collection: np.ndarray | None = None) -> VoicePrediction:
        """Predict every segment of one encoded window.

        Args:
            window: one :meth:`SpeechEncoder.encode` pass.
            segments: ``(start, end)`` pairs, seconds on the recording's clock, each overlapping the
                window; parts outside the window are ignored, and segments shorter than
                :data:`MIN_SEGMENT_SECONDS` are widened (see :attr:`VoicePrediction.widened`).
            collection: see :meth:`predict_features`.

        Raises:
            ValueError: a segment is empty or outside the window, the window comes from another
                encoder, or ``collection`` does not fit the head (see :meth:`predict_features`).
        """
        self._check_window(window)
        spans = [segment_span(window, float(s), float(e)) for s, e in segments]
        hidden = self.head.mlp_in[1].out_features
        if not spans:
            return VoicePrediction(
                emotions=np.zeros((0, len(EMOTIONS))),
                emotions8=np.zeros((0, len(RAVDESS_8))),
                arousal=np.zeros(0),
                valence=np.zeros(0),
                embeddings=np.zeros((0, hidden), dtype=np.float32),
                widened=np.zeros(0, dtype=bool),
                features=np.zeros((0, self.head.n_features), dtype=np.float32),
            )
        features = np.stack([segment_features(window, s, e) for s, e, _ in spans])
        return self.predict_features(features, widened=np.array([w for _, _, w in spans], dtype=bool), collection=collection)

    @torch.inference_mode()
    def predict_features(self, features: np.ndarray, *, widened: np.ndarray | None = None,
                         collection: np.ndarray | None = None) -> VoicePrediction:
        """The voice outputs of segments whose :func:`segment_features` were computed already (for
        example kept from an earlier encoder pass): what :meth:`predict` returns for them.

        Args:
            features: shape ``(k, n_features)``, rows of :func:`segment_features`.
            widened: shape ``(k,)`` bool, see :attr:`VoicePrediction.widened`; None: all False.
            collection: shape ``(n_features,)``, the :func:`collection_mean` of the collection the
                segments belong to; required by a head whose reference is ``collection``, refused by others.

        Raises:
            ValueError: ``collection`` is missing for a collection head, or given to another.
        """
        if self.reference == "collection" and collection is None:
            raise ValueError(f"voice head {self.path.name} reads features against the mean of their collection: pass collection=")
        if self.reference == "none" and collection is not None:
            raise ValueError(f"voice head {self.path.name} reads features as computed: it takes no collection mean")
        if collection is not None and np.shape(collection) != (self.head.n_features,):
            raise ValueError(f"a collection mean of shape {np.shape(collection)}; voice head {self.path.name} reads {self.head.n_features} features")
        features = np.asarray(features, dtype=np.float32)
        probs8, embedding = self.probabilities(features if collection is None else features - np.asarray(collection, dtype=np.float32))
        valence_arousal = probs8 @ CIRCUMPLEX_MATRIX
        return VoicePrediction(
            emotions=probs8 @ SHARED_SPACE,
            emotions8=probs8,
            arousal=valence_arousal[:, 1],
            valence=valence_arousal[:, 0],
            embeddings=embedding,
            widened=np.zeros(len(probs8), dtype=bool) if widened is None else np.asarray(widened, dtype=bool),
            features=features,
        )
