"""The text branch: emotion, sentiment and a sentence embedding for each segment's words.

A sentence encoder (:mod:`multimodal_ser.sentence_encoder`: the one the head was trained on)
turns each text into one L2-normalised vector. A small MLP head trained by
:func:`multimodal_ser.training.text.train_text_head` maps that vector to
:data:`~multimodal_ser.labels.EMOTIONS` and :data:`~multimodal_ser.labels.SENTIMENTS` probabilities.
A head fine-tuned together with its encoder carries the tuned encoder weights in its own file
(tensors named ``encoder.<key>``, see :func:`tuned_file_tensors`), and, for an encoder run in int8,
the input ranges its int8 layers are smoothed by (``int8_range.<layer>``).
A head trained with dialogue context also reads the preceding turns (:func:`dialogue_context`);
a head reads only the languages it was trained on (:attr:`TextEmotionModel.languages`).

Example::

    model = TextEmotionModel()
    pred = model.predict(["I am so happy, this is wonderful!"])
    pred.emotions.shape, pred.sentiment.shape, pred.embeddings.shape   # (1, 7) (1, 3) (1, 384)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import grid as grid_mod
from .calibration import stored_temperature
from .errors import ModelError
from .files import sha256_file
from .heads import MODELS_DIR, MLPHead, load_head
from .labels import EMOTIONS, SENTIMENTS
from .sentence_encoder import LowRankDelta, TunedWeights, encoder_for, validate_texts

logger = logging.getLogger(__name__)

DEFAULT_HEAD_PATH = MODELS_DIR / "text_head.safetensors"
"""The packaged head, trained by ``mser train text`` (see ``models/text_head.md``)."""

WEIGHTS_FILE = "model.safetensors"
"""The only weight file an encoder folder is loaded from: no pickled checkpoints."""

TUNED_PREFIX = "encoder."
"""Prefix of the tensors in a head file that replace or change its encoder's weights (see :func:`tuned_file_tensors`)."""

INT8_PREFIX = "int8_range."
"""Prefix of the tensors in a head file that give its encoder's int8 layers their input ranges
(see :meth:`~multimodal_ser.sentence_encoder.SentenceEncoder.quantise`)."""

DELTA_PARTS = (".delta_up", ".delta_scale", ".delta_down")
"""Suffixes of a :class:`~multimodal_ser.sentence_encoder.LowRankDelta`'s ``up``, ``scale`` and ``down`` in a head file."""

DEFAULT_LANGUAGES = ("en",)
"""ISO 639-1 codes a head reads when its config names none: the corpora it is trained on are English."""

def dialogue_context(embeddings: np.ndarray, dialogues: Sequence, *, turns: int, decay: float) -> np.ndarray:
    """What was said just before each text: the decayed mean of the preceding turns' embeddings.

    Args:
        embeddings: float32 ``(n, d)`` sentence embeddings, in spoken order.
        dialogues: ``(n,)`` dialogue (recording) ids; only earlier rows with the same id count.
        turns: how many preceding turns are read, >= 1.
        decay: weight ratio of each turn to the one after it, in (0, 1]: the turn ``j`` back
            weighs ``decay ** (j - 1)``; weights are normalised over the turns there are.

    Returns:
        float32 ``(n, d)``; zeros for a dialogue's first turn.
    """
    if len(dialogues) != len(embeddings):
        raise ValueError(f"dialogues must have one id per embedding ({len(embeddings)}), not {len(dialogues)}")
    if turns < 1 or not 0 < decay <= 1:
        raise ValueError(f"turns must be >= 1 and decay in (0, 1], not {turns} and {decay}")
    out = np.zeros_like(embeddings, dtype=np.float32)
    history: dict = {}
    weights = decay ** np.arange(turns, dtype=np.float64)
    for i, dialogue in enumerate(dialogues):
        before = history.setdefault(dialogue, [])
        if before:
            w = weights[: len(before)]
            out[i] = np.tensordot(w / w.sum(), embeddings[before[::-1]], axes=1)
        before.append(i)
        del before[:-turns]
    return out


def head_features(embeddings: np.ndarray, dialogues: Sequence | None, context: dict | None) -> np.ndarray:
    """A text head's input: the embeddings, followed by their :func:`dialogue_context` for a head
    trained with one.

    Args:
        embeddings: float32 ``(n, d)``, in spoken order.
        dialogues: ``(n,)`` dialogue ids, or None when each text stands alone (zero context).
        context: the head's ``{"turns": k, "decay": r}``, or None for a head without context.

    Returns:
        float32 ``(n, d)`` without context, ``(n, 2d)`` with.
    """
    if context is None:
        return embeddings
    if dialogues is None:
        return np.concatenate([embeddings, np.zeros_like(embeddings)], axis=1)
    return np.concatenate(
        [embeddings, dialogue_context(embeddings, dialogues, turns=int(context["turns"]), decay=float(context["decay"]))],
        axis=1,
    )


@dataclass(frozen=True)
class TextPrediction:
    """Predictions for n texts."""

    emotions: np.ndarray
    """float64 ``(n, 7)``: probabilities over :data:`~multimodal_ser.labels.EMOTIONS`, rows sum to 1."""
    sentiment: np.ndarray
    """float64 ``(n, 3)``: probabilities over :data:`~multimodal_ser.labels.SENTIMENTS`, rows sum to 1."""
    embeddings: np.ndarray
    """float32 ``(n, d)``: the encoder's sentence embeddings (d = 384 for e5-small and MiniLM), unit L2 norm."""

    def __post_init__(self):
        n = len(self.embeddings)
        if self.emotions.shape != (n, len(EMOTIONS)) or self.sentiment.shape != (n, len(SENTIMENTS)):
            raise ValueError(
                f"expected emotions ({n}, {len(EMOTIONS)}) and sentiment ({n}, {len(SENTIMENTS)}), "
                f"found {self.emotions.shape} and {self.sentiment.shape}"
            )


def tuned_file_tensors(tuned: TunedWeights) -> dict[str, torch.Tensor]:
    """How a head file stores tuned encoder weights: whole tensors as float16 ``encoder.<key>``, a
    :class:`LowRankDelta` as its three tensors ``encoder.<key>`` + :data:`DELTA_PARTS`, as they are."""
    stored = {}
    for key, value in tuned.items():
        if isinstance(value, LowRankDelta):
            for suffix, part in zip(DELTA_PARTS, (value.up, value.scale, value.down)):
                stored[TUNED_PREFIX + key + suffix] = part.contiguous()
        else:
            stored[TUNED_PREFIX + key] = value.half()
    return stored


def split_head_tensors(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], TunedWeights, dict[str, torch.Tensor]]:
    """A head file's tensors as ``(head tensors, tuned encoder weights, int8 ranges)`` (see
    :func:`tuned_file_tensors` and :data:`INT8_PREFIX`). The tuned weights, keyed as the encoder's
    ``state_dict``, with whole tensors as float32, are empty for a head on a frozen encoder; the int8
    ranges, keyed by layer name, are empty for an encoder run in float32.

    Raises:
        ModelError: a low-rank change lacks one of its parts.
    """
    head = {k: v for k, v in tensors.items() if not k.startswith((TUNED_PREFIX, INT8_PREFIX))}
    int8_ranges = {k[len(INT8_PREFIX):]: v.float() for k, v in tensors.items() if k.startswith(INT8_PREFIX)}
    stored = {k[len(TUNED_PREFIX):]: v for k, v in tensors.items() if k.startswith(TUNED_PREFIX)}
    tuned: dict[str, torch.Tensor | LowRankDelta] = {}
    for name, value in stored.items():
        suffix = next((p for p in DELTA_PARTS if name.endswith(p)), None)
        if suffix is None:
            tuned[name] = value.float()
            continue
        key = name.removesuffix(suffix)
        parts = [stored.get(key + p) for p in DELTA_PARTS]
        if any(part is None for part in parts):
            raise ModelError(f"tuned tensor {TUNED_PREFIX + name} lacks its other parts (a low-rank change has all of {list(DELTA_PARTS)})")
        tuned[key] = LowRankDelta(*parts)
    return head, tuned, int8_ranges


def head_from_tensors(tensors: dict[str, torch.Tensor], config: dict) -> MLPHead:
    """Rebuild the :class:`~multimodal_ser.heads.MLPHead` a text-head file describes.

    The head's inputs are :func:`head_features` (``embedding_dim``, or twice that with a
    ``context``); its outputs are ``len(config["labels"])`` emotion logits followed by
    ``len(config["sentiment_labels"])`` sentiment logits.

    Raises:
        ModelError: the config lacks a key, or its label lists differ from the package's, or the
            tensors do not fit the config.
    """
    required = ("labels", "sentiment_labels", "embedding_dim", "hidden", "dropout", "encoder")
    missing = [k for k in required if k not in config]
    if missing:
        raise ModelError(f"text head config lacks {missing}; expected keys {list(required)}")
    if tuple(config["labels"]) != EMOTIONS or tuple(config["sentiment_labels"]) != SENTIMENTS:
        raise ModelError(
            f"text head labels must be {list(EMOTIONS)} + {list(SENTIMENTS)}, "
            f"found {config['labels']} + {config['sentiment_labels']}"
        )
    head = MLPHead(
        int(config["embedding_dim"]) * (2 if config.get("context") else 1),
        len(EMOTIONS) + len(SENTIMENTS),
        hidden=int(config["hidden"]),
        dropout=float(config["dropout"]),
    )
    try:
        head.load_state_dict(tensors)
    except RuntimeError as e:
        raise ModelError(f"text head tensors do not fit its config ({e})") from e
    return head.eval()


class TextEmotionModel:
    """Sentence encoder + trained head: emotion and sentiment probabilities and embeddings per text.

    Args:
        encoder_path: a local sentence-transformers folder (see
            :class:`~multimodal_ser.sentence_encoder.SentenceEncoder`) for a head trained on one;
            None uses the packaged encoder the head was trained on (see
            :func:`~multimodal_ser.sentence_encoder.encoder_for`).
        head_path: a head written by ``train_text_head``; None uses :data:`DEFAULT_HEAD_PATH`.
            The packaged head is checked against ``models/SHA256SUMS``.
        calibrated: divide the logits by the temperatures the head's config stores under
            ``calibration`` (fitted on held-out text, see
            :func:`multimodal_ser.training.calibrate.calibrate_text_head`); False gives the raw head.

    The head records the sha256 of the encoder weights it was trained on; the encoder's weights
    are checked against it before they are loaded, so a head never runs on another encoder's
    embeddings. To use another encoder, train a head on it first. A fine-tuned head's own encoder
    tensors then replace the checked weights they were tuned from.

    Raises:
        ModelError: a missing or corrupt file, or an encoder the head was not trained on.
    """

    def __init__(
        self,
        *,
        encoder_path: str | os.PathLike | None = None,
        head_path: str | os.PathLike | None = None,
        calibrated: bool = True,
    ):
        self.head_path = Path(head_path) if head_path is not None else DEFAULT_HEAD_PATH
        tensors, self.head_config = load_head(self.head_path)
        self.head_sha256 = sha256_file(self.head_path)
        try:
            head_tensors, tuned, int8_ranges = split_head_tensors(tensors)
            self.head = head_from_tensors(head_tensors, self.head_config)
            self.temperature = stored_temperature(self.head_config) if calibrated else 1.0
            self.sentiment_temperature = stored_temperature(self.head_config, "sentiment_temperature") if calibrated else 1.0
        except (ValueError, ModelError) as e:
            raise ModelError(f"{self.head_path}: {e}") from e
        trained_on = self.head_config["encoder"]
        try:
            self.encoder = encoder_for(trained_on, encoder_path, tuned=tuned, int8_ranges=int8_ranges)
        except ModelError as e:
            raise ModelError(f"{e} (the head {self.head_path.name} was trained on {trained_on.get('id')})") from e
        if self.encoder.dim != int(self.head_config["embedding_dim"]):
            raise ModelError(
                f"encoder gives {self.encoder.dim}-d embeddings, head expects {self.head_config['embedding_dim']}"
            )

    @property
    def model_ids(self) -> dict[str, str]:
        """Provenance for output metadata: encoder id and weight sha256, head file name and sha256."""
        return {
            "text_encoder": self.encoder.id,
            "text_encoder_sha256": self.encoder.sha256,
            "text_head": self.head_path.name,
            "text_head_sha256": self.head_sha256,
        }

    @property
    def languages(self) -> tuple[str, ...]:
        """ISO 639-1 codes of the languages the head was trained and measured on (its config's
        ``languages``, else :data:`DEFAULT_LANGUAGES`); :func:`text_table` reads no other language."""
        return tuple(self.head_config.get("languages", DEFAULT_LANGUAGES))

    @property
    def context(self) -> dict | None:
        """The head's dialogue context, ``{"turns": k, "decay": r}`` (see :func:`dialogue_context`),
        or None for a head that reads each text alone."""
        return self.head_config.get("context")

    def predict(
        self, texts: Sequence[str], *, dialogues: Sequence | None = None, batch_size: int = 64
    ) -> TextPrediction:
        """Emotion and sentiment probabilities and embeddings for ``texts``.

        Args:
            texts: n non-blank strings, in spoken order (a segment with no words is absent, not
                predicted: see :func:`text_table`).
            dialogues: ``(n,)`` dialogue ids: a head with a :attr:`context` reads each text with
                the preceding texts of its dialogue. None: each text alone.
            batch_size: texts per encoder forward pass, >= 1.

        Returns:
            :class:`TextPrediction` with arrays of n rows.

        Raises:
            ValueError: a text is blank.
        """
        texts = validate_texts(texts)
        blank = [i for i, t in enumerate(texts) if not t.strip()]
        if blank:
            raise ValueError(f"texts must be non-blank; texts{blank[:5]} are blank (text_table marks them absent)")
        embeddings = self.encoder.encode(texts, batch_size=batch_size)
        features = head_features(embeddings, dialogues, self.context)
        with torch.inference_mode():
            logits = self.head(torch.from_numpy(features)).double()
        n_emotions = len(EMOTIONS)
        return TextPrediction(
            emotions=torch.softmax(logits[:, :n_emotions] / self.temperature, dim=1).numpy(),
            sentiment=torch.softmax(logits[:, n_emotions:] / self.sentiment_temperature, dim=1).numpy(),
            embeddings=embeddings,
        )


def text_table(
    grid: pd.DataFrame, model: TextEmotionModel, *, language: str | None = None, batch_size: int = 64
) -> pd.DataFrame:
    """The text modality's columns for every row of a segment grid.

    Args:
        grid: the segment grid (see :mod:`multimodal_ser.grid`) of one recording, in time order;
            its ``text`` column is read, each row with the rows before it as dialogue context
            (for a model with a :attr:`~TextEmotionModel.context`). A row whose text is missing
            or blank is absent (``text_present=False``) and is no one's context.
        model: the text model.
        language: ISO 639-1 code of the grid's text (the ASR's detection or the user's
            ``--language``). A language not in ``model.languages`` makes every row absent: an
            English-only head gives no label for text it cannot read. None (not known) reads the text.
        batch_size: texts per encoder forward pass, >= 1.

    Returns:
        One row per grid row, in the grid's order and with the grid's index:
        the columns of :func:`multimodal_ser.grid.modality_table` for ``"text"``
        (``text_embedding`` holds float32 lists of the encoder's size), then ``text_absent_reason``
        (None where the text was read, else ``"no words"`` or ``"language de: the text head reads en
        only"``), ``sentiment``
        (``"negative"``, ``"neutral"``, ``"positive"`` or None) and
        ``text_sentiment_<s>`` probabilities for each of :data:`~multimodal_ser.labels.SENTIMENTS`
        (NaN where absent).
    """
    if "text" not in grid.columns:
        raise ValueError(
            f"grid must have a 'text' column (expected {list(grid_mod.GRID_COLUMNS)}), found {list(grid.columns)}"
        )
    texts = [t if isinstance(t, str) else "" for t in grid["text"]]
    has_words = np.array([bool(t.strip()) for t in texts], dtype=bool)
    unread = language is not None and language not in model.languages
    present = has_words & (not unread)
    n = len(texts)
    emotions = np.full((n, len(EMOTIONS)), np.nan)
    sentiment = np.full((n, len(SENTIMENTS)), np.nan)
    embeddings = np.zeros((n, model.encoder.dim), dtype=np.float32)
    rows = np.flatnonzero(present)
    if len(rows):
        pred = model.predict([texts[i] for i in rows], dialogues=np.zeros(len(rows)), batch_size=batch_size)
        emotions[rows], sentiment[rows], embeddings[rows] = pred.emotions, pred.sentiment, pred.embeddings
    table = grid_mod.modality_table("text", emotions, present, embeddings)
    unread_reason = f"language {language}: the text head reads {', '.join(model.languages)} only"
    table["text_absent_reason"] = pd.Series(
        [None if p else unread_reason if w else "no words" for p, w in zip(present, has_words)], dtype=object
    )
    best = np.argmax(np.nan_to_num(sentiment, nan=-1.0), axis=1)
    table["sentiment"] = pd.Series([SENTIMENTS[b] if p else None for b, p in zip(best, present)], dtype=object)
    for j, name in enumerate(SENTIMENTS):
        table[f"text_sentiment_{name}"] = sentiment[:, j]
    table.index = grid.index
    return table

