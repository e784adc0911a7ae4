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

Training (:func:`fit_attention_fusion`) uses modality dropout: each present modality of a
training row is hidden with probability ``modality_dropout``, never all of a row's, so the module
copes with a missing face or transcript. Modalities the module never saw in training are ignored
at inference (their projections are untrained) and named in :meth:`AttentionFusion.describe`.

The packaged module, ``models/attention_fusion.safetensors`` (card: ``attention_fusion.md``), is
trained by ``mser train fusion`` (:func:`multimodal_ser.training.fusion.train_fusion`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .errors import ModelError
from .files import sha256_file
from .calibration import fit_temperature as fit_probability_temperature
from .fusion.base import EPS as _EPS
from .fusion.base import modality_probabilities
from .fusion.base import targets as _targets
from .fusion.base import valid_modalities as _valid_modalities
from .heads import MODELS_DIR, load_head, one_torch_thread, save_head
from .labels import EMOTIONS, MODALITIES

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
class _Inputs:
    embeddings: torch.Tensor
    """(n, M, d_max) float32, zeros where absent."""
    log_probs: torch.Tensor
    """(n, M, 7) float32, zeros where absent."""
    present: torch.Tensor
    """(n, M) bool."""


def _inputs(segments: pd.DataFrame, modalities: Sequence[str], dims: Sequence[int]) -> _Inputs:
    """Tensors of ``segments`` for the given modalities; a present row must have an embedding of the
    right size (unless its size is 0: probabilities only)."""
    n = len(segments)
    d_max = max(list(dims) + [1])
    embeddings = np.zeros((n, len(modalities), d_max), dtype=np.float32)
    log_probs = np.zeros((n, len(modalities), len(EMOTIONS)), dtype=np.float32)
    present = np.zeros((n, len(modalities)), dtype=bool)
    for i, (m, d) in enumerate(zip(modalities, dims)):
        probabilities, mask = modality_probabilities(segments, m)
        if not mask.any():
            continue
        log_probs[mask, i] = np.log(np.clip(probabilities[mask], _EPS, 1.0))
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
    return _Inputs(torch.from_numpy(embeddings), torch.from_numpy(log_probs), torch.from_numpy(present))


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
        inputs = _inputs(segments, self.modalities, self.module.dims)
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
            z = logits[present] - logits[present].max(axis=1, keepdims=True)
            probabilities[present] = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
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


def embedding_dims(
    segments: pd.DataFrame, modalities: Sequence[str], *, with_embeddings: Sequence[str] = MODALITIES
) -> dict[str, int]:
    """``{modality: embedding size}`` of the modalities present on some row of ``segments``
    (0 for those not in ``with_embeddings``).

    Raises:
        ValueError: a modality's present rows have embeddings of different sizes, or none.
    """
    dims = {}
    for m in modalities:
        _, mask = modality_probabilities(segments, m)
        if not mask.any():
            continue
        if m not in with_embeddings:
            dims[m] = 0
            continue
        if f"{m}_embedding" not in segments:
            raise ValueError(f"segments have {m} present but no {m}_embedding column")
        sizes = {len(v) if v is not None else 0 for v in segments.loc[mask, f"{m}_embedding"]}
        if len(sizes) != 1 or 0 in sizes:
            raise ValueError(f"{m}_embedding of present rows must all have one size, found sizes {sorted(sizes)}")
        dims[m] = sizes.pop()
    return dims


def _modality_dropout(present: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Hide each present modality with probability ``rate``; a row never loses all of them."""
    if rate == 0:
        return present
    keep = present & (torch.rand(present.shape, generator=generator) >= rate)
    emptied = present.any(dim=1) & ~keep.any(dim=1)
    if emptied.any():
        # give each emptied row back one of its present modalities, chosen at random
        scores = torch.rand(present.shape, generator=generator).masked_fill(~present, -1.0)
        chosen = nn.functional.one_hot(scores.argmax(dim=1), present.shape[1]).bool()
        keep = torch.where(emptied[:, None], chosen, keep)
    return keep


def _mean_nll(module: CrossModalAttention, inputs: _Inputs, y: torch.Tensor, weight: torch.Tensor | None) -> float:
    module.eval()
    with torch.inference_mode():
        logits = module(inputs.embeddings, inputs.log_probs, inputs.present)
        return float(nn.functional.cross_entropy(logits, y, weight=weight))


def _class_weights(y: torch.Tensor) -> torch.Tensor:
    """shape ``(7,)``: ``n / (classes present * n_c)``, 0 for a class absent from ``y``."""
    counts = torch.bincount(y, minlength=len(EMOTIONS)).double()
    weights = torch.where(counts > 0, counts.sum() / ((counts > 0).sum() * counts.clamp_min(1)), torch.zeros_like(counts))
    return weights.float()


def _fit_temperature(module: CrossModalAttention, inputs: _Inputs, y: torch.Tensor) -> float:
    """Temperature scaling (:func:`multimodal_ser.calibration.fit_temperature`) of the module's logits on ``inputs``."""
    module.eval()
    with torch.inference_mode():
        probabilities = torch.softmax(module(inputs.embeddings, inputs.log_probs, inputs.present).double(), dim=1).numpy()
    return fit_probability_temperature(probabilities, y.numpy())


def _stacked_pool(segments: pd.DataFrame, labels: Sequence[str], modalities: Sequence[str]) -> dict[str, float] | None:
    """Effective weights ``w_m / T`` of late fusion stacked on the training rows, or None if nothing is informative."""
    from .fusion.late import fit_late_fusion

    try:
        stacked = fit_late_fusion(segments, labels, modalities=modalities)
    except ValueError as e:
        log.warning("skip path starts from default weights: %s", e)
        return None
    return {m: stacked.weights[m] / stacked.temperature for m in modalities}


@one_torch_thread()
def fit_attention_fusion(
    segments: pd.DataFrame,
    labels: Sequence[str],
    *,
    validation: tuple[pd.DataFrame, Sequence[str]] | None = None,
    modalities: Sequence[str] = MODALITIES,
    options: AttentionOptions = AttentionOptions(),
    seed: int = 0,
    provenance: dict | None = None,
) -> AttentionFusion:
    """Train an attention fusion on per-segment branch outputs.

    Args:
        segments: ``<m>_present``, ``<m>_<label>`` and ``<m>_embedding`` columns per modality, one
            row per labelled segment (predictions held out from what trained the branches).
        labels: the true label of each row (names of :data:`~multimodal_ser.labels.EMOTIONS`).
        validation: ``(segments, labels)`` of other groups (speakers): training stops when their
            log-loss stops improving (``options.patience``) and the temperature is fitted on them.
            None trains for ``options.epochs`` and keeps ``T = 1``.
        modalities: the modalities to read; those never present in ``segments`` are left out.
        options: architecture and training settings.
        seed: weights initialisation, batch order and modality dropout.
        provenance: stored in the module's config under ``trained_on``.

    Returns:
        The trained fusion; its ``config["training"]`` holds epochs run and log-losses.

    Raises:
        ValueError: bad labels or modalities, or no row with any modality present.
    """
    modalities = _valid_modalities(modalities)
    y_all = _targets(labels, len(segments))
    dims = embedding_dims(segments, modalities, with_embeddings=options.embeddings)
    if not dims:
        raise ValueError(f"no segment has any of {list(modalities)} present; nothing to train on")
    used = tuple(m for m in MODALITIES if m in dims)
    inputs = _inputs(segments, used, [dims[m] for m in used])
    rows = inputs.present.any(dim=1)
    inputs = _Inputs(inputs.embeddings[rows], inputs.log_probs[rows], inputs.present[rows])
    y = torch.from_numpy(y_all)[rows]
    val = None
    if validation is not None:
        val_segments, val_labels = validation
        val_inputs = _inputs(val_segments, used, [dims[m] for m in used])
        val_rows = val_inputs.present.any(dim=1)
        if val_rows.any():
            val = (
                _Inputs(val_inputs.embeddings[val_rows], val_inputs.log_probs[val_rows], val_inputs.present[val_rows]),
                torch.from_numpy(_targets(val_labels, len(val_segments)))[val_rows],
            )
        else:
            log.warning("no validation row has any of %s present: training without early stopping", list(used))

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    module = CrossModalAttention(dims, width=options.width, heads=options.heads, layers=options.layers, dropout=options.dropout)
    pool = _stacked_pool(segments, labels, used)
    with torch.no_grad():
        for i, m in enumerate(used):
            if dims[m] > 0:
                values = inputs.embeddings[inputs.present[:, i], i, : dims[m]]
                module.mean[i, : dims[m]] = values.mean(dim=0)
                module.std[i, : dims[m]] = values.std(dim=0, unbiased=False).clamp_min(1e-4)
            if pool is not None:  # softplus(beta) = w / T of stacking
                module.beta[i] = float(np.log(np.expm1(max(pool[m], 1e-3))))
    optimiser = torch.optim.AdamW(module.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay)
    weight = _class_weights(y) if options.class_balanced else None
    n = len(y)
    # epoch 0, the stacked late fusion the module starts from, is a candidate like any other: the
    # cross-modal corrections are kept only if they lower the validation loss below it
    best_state, best_loss, best_epoch, epoch = None, float("inf"), 0, 0
    if val is not None:
        best_state, best_loss = copy.deepcopy(module.state_dict()), _mean_nll(module, *val, weight)
    history = []
    for epoch in range(1, options.epochs + 1):
        module.train()
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, options.batch_size):
            batch = order[start : start + options.batch_size]
            present = _modality_dropout(inputs.present[batch], options.modality_dropout, generator)
            logits = module(inputs.embeddings[batch], inputs.log_probs[batch], present)
            loss = nn.functional.cross_entropy(logits, y[batch], weight=weight)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        train_loss = total / n
        if val is None:
            history.append({"epoch": epoch, "train_log_loss": train_loss})
            continue
        val_loss = _mean_nll(module, *val, weight)
        history.append({"epoch": epoch, "train_log_loss": train_loss, "val_log_loss": val_loss})
        if val_loss < best_loss - 1e-4:
            best_state, best_loss, best_epoch = copy.deepcopy(module.state_dict()), val_loss, epoch
        elif epoch - best_epoch >= options.patience:
            break
    if best_state is not None:
        module.load_state_dict(best_state)
    temperature = _fit_temperature(module, *val) if val is not None else 1.0
    if val is None:
        best_epoch = epoch
    log.info(
        "attention fusion on %s: %d rows, %d epochs (best %d), validation log-loss %s, T=%.2f",
        "+".join(used), n, epoch, best_epoch, f"{best_loss:.3f}" if val is not None else "n/a", temperature,
    )
    config = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "labels": list(EMOTIONS),
        "embedding_dims": dims,
        "options": dataclasses.asdict(options),
        "temperature": temperature,
        "seed": seed,
        "training": {
            "n_rows": n,
            "n_validation_rows": 0 if val is None else len(val[1]),
            "epochs_run": epoch,
            "best_epoch": best_epoch,
            "validation_log_loss": None if val is None else best_loss,
            "final_train_log_loss": history[-1]["train_log_loss"],
        },
        "trained_on": provenance or {},
    }
    return AttentionFusion(module.eval(), config)
