"""Attention fusion: a small cross-modal Transformer over the modalities present in a segment.

Each present modality ``m`` becomes one token of width ``D``::

    token_m = Linear_m(standardised embedding_m) + Linear'_m(log p_m) + modality_embedding[m]

(without the first term for a modality whose embedding is left out, see
:attr:`AttentionOptions.embeddings`).

A learned summary token and the modality tokens go through ``layers`` Transformer-encoder layers
(``heads`` heads, pre-norm) with a key-padding mask, so absent modalities are never attended to;
the summary token's output is mapped to 7 logits. A log-linear skip path adds
``Σ_m softplus(β_m) · log p_m`` over the present modalities; ``β`` starts at the weights that
stacking (:func:`~multimodal_ser.fusion.fit_late_fusion`) learns on the training rows and the
attention path's output layer starts at zero, so training begins from learned late fusion and
adds cross-modal corrections only where they lower the validation loss. Logits are divided by a
temperature fitted on validation data.

Modalities the module never saw in training are ignored at inference (their projections are
untrained) and named in :meth:`AttentionFusion.describe`. Training: :mod:`.attention_training`.

The packaged module, ``models/attention_fusion.safetensors`` (card: ``attention_fusion.md``), is
trained by ``mser train fusion`` (:func:`multimodal_ser.training.fusion.train_fusion`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..errors import ModelError
from ..files import sha256_file
from ..heads import MODELS_DIR, load_head, one_torch_thread, save_head
from ..labels import EMOTIONS, MODALITIES
from .base import EPS, modality_probabilities, softmax

log = logging.getLogger(__name__)

DEFAULT_PATH = MODELS_DIR / "attention_fusion.safetensors"
"""The packaged module (see ``models/attention_fusion.md``)."""

FORMAT = "multimodal-ser/attention-fusion"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class AttentionOptions:
    """Architecture and training settings of :func:`fit_attention_fusion`."""

    width: int = 64
    """D: the shared token width."""
    heads: int = 4
    """attention heads; must divide ``width``."""
    layers: int = 1
    """Transformer-encoder layers (1 or 2 are plenty for at most 3 tokens)."""
    dropout: float = 0.1
    modality_dropout: float = 0.3
    """probability of hiding each present modality of a training row (never all of them)."""
    epochs: int = 200
    """upper bound; training stops when the validation log-loss has not improved for ``patience`` epochs."""
    patience: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    class_balanced: bool = True
    """weigh each class equally in the training and early-stopping loss (weights inversely
    proportional to the class counts), so the module does not learn the class frequencies of its
    training data (MELD is half neutral, FER2013 a quarter happy) as if they held for every user."""
    embeddings: tuple[str, ...] = MODALITIES
    """modalities whose embedding feeds their token; the others' tokens see only their
    probabilities. Leave out a modality whose embedding depends on the branch's trained head when
    the fusion learns from other heads' outputs than the one it will run with (cross-fitted voice
    heads): their embedding spaces differ."""

    def __post_init__(self):
        object.__setattr__(self, "embeddings", tuple(self.embeddings))
        if not set(self.embeddings) <= set(MODALITIES):
            raise ValueError(f"embeddings must name modalities of {MODALITIES}, not {list(self.embeddings)}")
        for name in ("width", "heads", "layers", "epochs", "patience", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, not {value!r}")
        if self.width % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide width ({self.width})")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")
        if not 0 <= self.modality_dropout < 1:
            raise ValueError(f"modality_dropout must be in [0, 1), not {self.modality_dropout}")
        if self.learning_rate <= 0 or self.weight_decay < 0:
            raise ValueError(f"learning_rate must be > 0 and weight_decay >= 0, not {self.learning_rate}, {self.weight_decay}")


class CrossModalAttention(nn.Module):
    """Modality tokens -> Transformer encoder with a key-padding mask -> 7 logits.

    Args:
        embedding_dims: ``{modality: embedding size}`` of the modalities it reads, in
            :data:`~multimodal_ser.labels.MODALITIES` order; size 0 = the token sees only the
            modality's probabilities.
        width, heads, layers, dropout: see :class:`AttentionOptions`.

    ``forward(embeddings (B, M, d_max), log_probs (B, M, 7), present (B, M) bool) -> logits (B, 7)``;
    ``embeddings`` are raw (standardised inside with the stored means and standard deviations),
    zero-padded to the largest size; absent entries may hold anything finite.
    """

    def __init__(self, embedding_dims: dict[str, int], *, width: int, heads: int, layers: int, dropout: float):
        super().__init__()
        self.modalities = tuple(m for m in MODALITIES if m in embedding_dims)
        self.dims = [int(embedding_dims[m]) for m in self.modalities]
        d_max = max(self.dims + [1])
        n = len(self.modalities)
        self.register_buffer("mean", torch.zeros(n, d_max))
        self.register_buffer("std", torch.ones(n, d_max))
        self.embed = nn.ModuleDict({m: nn.Linear(d, width) for m, d in zip(self.modalities, self.dims) if d > 0})
        self.evidence = nn.ModuleList([nn.Linear(len(EMOTIONS), width) for _ in self.dims])
        self.modality = nn.Parameter(torch.randn(n, width) * 0.02)
        self.summary = nn.Parameter(torch.randn(1, 1, width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=2 * width, dropout=dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, len(EMOTIONS)))
        # the attention path starts at zero: training begins from the log-linear pool of the skip
        # path and adds cross-modal corrections only where they lower the loss
        nn.init.zeros_(self.head[1].weight)
        nn.init.zeros_(self.head[1].bias)
        # softplus(beta) = 0.5: the skip path starts as a mild log-linear pool
        self.beta = nn.Parameter(torch.full((n,), float(np.log(np.expm1(0.5)))))

    def forward(self, embeddings: torch.Tensor, log_probs: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        standard = (embeddings - self.mean) / self.std
        tokens = torch.stack(
            [
                (self.embed[m](standard[:, i, :d]) if d > 0 else 0.0) + self.evidence[i](log_probs[:, i]) + self.modality[i]
                for i, (m, d) in enumerate(zip(self.modalities, self.dims))
            ],
            dim=1,
        )
        batch = tokens.shape[0]
        x = torch.cat([self.summary.expand(batch, -1, -1), tokens], dim=1)
        padding = torch.cat([torch.zeros(batch, 1, dtype=torch.bool), ~present], dim=1)
        x = self.encoder(x, src_key_padding_mask=padding)
        skip = (nn.functional.softplus(self.beta)[None, :, None] * log_probs * present[..., None]).sum(dim=1)
        return self.head(x[:, 0]) + skip


@dataclasses.dataclass(frozen=True)
class AttentionInputs:
    """The tensors :class:`CrossModalAttention` reads, for ``n`` segments and ``M`` modalities."""

    embeddings: torch.Tensor
    """(n, M, d_max) float32, zeros where absent."""
    log_probs: torch.Tensor
    """(n, M, 7) float32, zeros where absent."""
    present: torch.Tensor
    """(n, M) bool."""


def attention_inputs(segments: pd.DataFrame, modalities: Sequence[str], dims: Sequence[int]) -> AttentionInputs:
    """Tensors of ``segments`` for ``modalities``, whose embedding sizes are ``dims`` (0: probabilities
    only); a present row must have an embedding of its modality's size.

    Raises:
        ValueError: a missing embedding column, an embedding of the wrong size, or a non-finite one.
    """
    n = len(segments)
    d_max = max(list(dims) + [1])
    embeddings = np.zeros((n, len(modalities), d_max), dtype=np.float32)
    log_probs = np.zeros((n, len(modalities), len(EMOTIONS)), dtype=np.float32)
    present = np.zeros((n, len(modalities)), dtype=bool)
    for i, (m, d) in enumerate(zip(modalities, dims)):
        probabilities, mask = modality_probabilities(segments, m)
        if not mask.any():
            continue
        log_probs[mask, i] = np.log(np.clip(probabilities[mask], EPS, 1.0))
        present[:, i] = mask
        if d == 0:
            continue
        column = f"{m}_embedding"
        if column not in segments:
            raise ValueError(f"segments have {m} present but no {column} column; attention fusion needs the embeddings")
        values = segments[column].to_numpy(dtype=object)
        for row in np.flatnonzero(mask):
            vector = values[row]
            if vector is None or len(vector) != d:
                found = "none" if vector is None else f"size {len(vector)}"
                raise ValueError(f"{column} of row {row} must be a vector of size {d}, found {found}")
            embeddings[row, i, :d] = np.asarray(vector, dtype=np.float32)
    if not np.isfinite(embeddings).all():
        raise ValueError("embeddings of present rows hold NaN or infinite values")
    return AttentionInputs(torch.from_numpy(embeddings), torch.from_numpy(log_probs), torch.from_numpy(present))


class AttentionFusion:
    """A trained :class:`CrossModalAttention` with the interface of :class:`~multimodal_ser.fusion.LateFusion`.

    Args:
        module: the trained module (eval mode is set here).
        config: JSON-ready description stored with the weights: ``embedding_dims``, options,
            ``temperature``, ``training`` (data and metrics), ...
    """

    name = "attention"

    def __init__(self, module: CrossModalAttention, config: dict):
        self.module = module.eval()
        self.config = config
        self.temperature = float(config.get("temperature", 1.0))
        if not self.temperature > 0:
            raise ModelError(f"attention fusion temperature must be positive, found {self.temperature}")
        self._warned: set[str] = set()

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities the module was trained on and reads."""
        return self.module.modalities

    @torch.inference_mode()
    @one_torch_thread()
    def logits(self, segments: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Temperature-scaled logits ``(n, 7)`` (NaN where nothing is present) and ``present (n,)``."""
        for m in MODALITIES:
            if m not in self.modalities and m not in self._warned and f"{m}_present" in segments:
                if segments[f"{m}_present"].fillna(False).astype(bool).any():
                    log.warning("attention fusion was not trained on %s: the %s columns are ignored", m, m)
                    self._warned.add(m)
        inputs = attention_inputs(segments, self.modalities, self.module.dims)
        present = inputs.present.any(dim=1).numpy()
        logits = np.full((len(segments), len(EMOTIONS)), np.nan)
        if present.any():
            rows = torch.from_numpy(np.flatnonzero(present))
            out = self.module(inputs.embeddings[rows], inputs.log_probs[rows], inputs.present[rows])
            logits[present] = out.double().numpy() / self.temperature
        return logits, present

    def fuse(self, segments: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Fused probabilities ``(n, 7)`` and ``present (n,)``; rows with no trained modality present are NaN, False."""
        logits, present = self.logits(segments)
        probabilities = np.full_like(logits, np.nan)
        if present.any():
            probabilities[present] = softmax(logits[present])
        return probabilities, present

    def describe(self) -> dict:
        """JSON-ready summary for output metadata."""
        out = {
            "fusion": self.name,
            "modalities": list(self.modalities),
            "ignored_modalities": [m for m in MODALITIES if m not in self.modalities],
            "temperature": self.temperature,
        }
        if "file" in self.config:
            out["file"] = self.config["file"]
        trained_on = self.config.get("trained_on") or {}
        if trained_on:  # a summary: the full provenance stays in the file's config
            out["trained_on"] = {
                "manifest": trained_on.get("manifest"),
                "items": trained_on.get("items"),
                "sources": {s: v.get("items") for s, v in (trained_on.get("sources") or {}).items()},
                "created": trained_on.get("created"),
            }
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write the module (safetensors, config as metadata) with :func:`multimodal_ser.heads.save_head`."""
        config = {k: v for k, v in self.config.items() if k != "file"}
        return save_head(path, dict(self.module.state_dict()), config)


def _module_from(config: dict) -> CrossModalAttention:
    options = AttentionOptions(**config["options"])
    return CrossModalAttention(
        {m: int(d) for m, d in config["embedding_dims"].items()},
        width=options.width,
        heads=options.heads,
        layers=options.layers,
        dropout=options.dropout,
    )


def load_attention_fusion(path: str | os.PathLike | None = None, *, sha256: str | None = None) -> AttentionFusion:
    """Load a trained attention fusion; the packaged one by default.

    Args:
        path: a file written by ``mser train fusion``; None uses :data:`DEFAULT_PATH`, whose sha256
            is checked against ``models/SHA256SUMS``.
        sha256: expected digest of a user's own file (optional).

    Raises:
        ModelError: the file is missing, corrupt, or not an attention-fusion module.
    """
    path = Path(path) if path is not None else DEFAULT_PATH
    if path == DEFAULT_PATH and not path.is_file():
        raise ModelError(f"{path}: the packaged attention fusion is missing; train it with `mser train fusion --manifest CSV`")
    tensors, config = load_head(path, sha256=sha256)
    if config.get("format") != FORMAT or config.get("version") != FORMAT_VERSION:
        raise ModelError(
            f"{path}: expected format {FORMAT!r} version {FORMAT_VERSION}, "
            f"found {config.get('format')!r} version {config.get('version')!r}"
        )
    if config.get("labels") != list(EMOTIONS):
        raise ModelError(f"{path}: labels must be {list(EMOTIONS)}, found {config.get('labels')}")
    try:
        module = _module_from(config)
        module.load_state_dict(tensors)
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ModelError(f"{path}: tensors do not fit the attention-fusion config ({e})") from e
    config = {**config, "file": {"name": path.name, "sha256": sha256_file(path)}}
    return AttentionFusion(module, config)
