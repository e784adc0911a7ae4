"""Training an attention fusion (:class:`~multimodal_ser.fusion.attention.AttentionFusion`).

Modality dropout: each present modality of a training row is hidden with probability
``modality_dropout``, never all of a row's, so the module copes with a missing face or transcript.
The module starts from late fusion stacked on the training rows (:func:`stacked_pool`); training
stops when the validation log-loss stops improving, and a temperature is fitted on validation data.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..calibration import fit_temperature as fit_probability_temperature
from ..heads import one_torch_thread
from ..labels import EMOTIONS, MODALITIES
from ..training.install import KeepBest
from .attention import (
    FORMAT,
    FORMAT_VERSION,
    AttentionFusion,
    AttentionInputs,
    AttentionOptions,
    CrossModalAttention,
    attention_inputs,
)
from .base import modality_probabilities, targets, valid_modalities
from .late import fit_late_fusion

log = logging.getLogger(__name__)


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


def modality_dropout(present: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
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


def _mean_nll(module: CrossModalAttention, inputs: AttentionInputs, y: torch.Tensor, weight: torch.Tensor | None) -> float:
    module.eval()
    with torch.inference_mode():
        logits = module(inputs.embeddings, inputs.log_probs, inputs.present)
        return float(nn.functional.cross_entropy(logits, y, weight=weight))


def _class_weights(y: torch.Tensor) -> torch.Tensor:
    """shape ``(7,)``: ``n / (classes present * n_c)``, 0 for a class absent from ``y``."""
    counts = torch.bincount(y, minlength=len(EMOTIONS)).double()
    weights = torch.where(counts > 0, counts.sum() / ((counts > 0).sum() * counts.clamp_min(1)), torch.zeros_like(counts))
    return weights.float()


def _fit_temperature(module: CrossModalAttention, inputs: AttentionInputs, y: torch.Tensor) -> float:
    """Temperature scaling (:func:`multimodal_ser.calibration.fit_temperature`) of the module's logits on ``inputs``."""
    module.eval()
    with torch.inference_mode():
        probabilities = torch.softmax(module(inputs.embeddings, inputs.log_probs, inputs.present).double(), dim=1).numpy()
    return fit_probability_temperature(probabilities, y.numpy())


def stacked_pool(segments: pd.DataFrame, labels: Sequence[str], modalities: Sequence[str]) -> dict[str, float] | None:
    """Effective weights ``w_m / T`` of late fusion stacked on the training rows, or None if nothing is informative."""
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
    modalities = valid_modalities(modalities)
    y_all = targets(labels, len(segments))
    dims = embedding_dims(segments, modalities, with_embeddings=options.embeddings)
    if not dims:
        raise ValueError(f"no segment has any of {list(modalities)} present; nothing to train on")
    used = tuple(m for m in MODALITIES if m in dims)
    inputs = attention_inputs(segments, used, [dims[m] for m in used])
    rows = inputs.present.any(dim=1)
    inputs = AttentionInputs(inputs.embeddings[rows], inputs.log_probs[rows], inputs.present[rows])
    y = torch.from_numpy(y_all)[rows]
    val = None
    if validation is not None:
        val_segments, val_labels = validation
        val_inputs = attention_inputs(val_segments, used, [dims[m] for m in used])
        val_rows = val_inputs.present.any(dim=1)
        if val_rows.any():
            val = (
                AttentionInputs(val_inputs.embeddings[val_rows], val_inputs.log_probs[val_rows], val_inputs.present[val_rows]),
                torch.from_numpy(targets(val_labels, len(val_segments)))[val_rows],
            )
        else:
            log.warning("no validation row has any of %s present: training without early stopping", list(used))

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    module = CrossModalAttention(dims, width=options.width, heads=options.heads, layers=options.layers, dropout=options.dropout)
    pool = stacked_pool(segments, labels, used)
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
    best = KeepBest(module, higher_is_better=False, patience=options.patience, min_delta=1e-4)
    if val is not None:
        best.update(0, _mean_nll(module, *val, weight))
    epoch = 0
    history = []
    for epoch in range(1, options.epochs + 1):
        module.train()
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, options.batch_size):
            batch = order[start : start + options.batch_size]
            present = modality_dropout(inputs.present[batch], options.modality_dropout, generator)
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
        if best.update(epoch, val_loss):
            break
    best.restore()
    temperature = _fit_temperature(module, *val) if val is not None else 1.0
    best_epoch = best.epoch if val is not None else epoch
    log.info(
        "attention fusion on %s: %d rows, %d epochs (best %d), validation log-loss %s, T=%.2f",
        "+".join(used), n, epoch, best_epoch, f"{best.best:.3f}" if val is not None else "n/a", temperature,
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
            "validation_log_loss": None if val is None else best.best,
            "final_train_log_loss": history[-1]["train_log_loss"],
        },
        "trained_on": provenance or {},
    }
    return AttentionFusion(module.eval(), config)
