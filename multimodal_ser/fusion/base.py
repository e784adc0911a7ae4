"""What every fusion shares: the interface, reading a modality's columns, evidence helpers, the fused columns.

A fusion offers :class:`Fusion`: ``fuse(segments) -> (probabilities (n, 7), present (n,))``,
``describe()``, ``name`` and ``modalities``. :func:`fused_columns` turns its output into the
fused columns of ``segments.parquet``, including how far the present branches agree with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import pandas as pd

from ..labels import EMOTIONS, MODALITIES

EPS = 1e-6
"""Probabilities are clipped to at least this before their log is taken."""

TEMPERATURE_RANGE = (0.05, 20.0)
"""Bounds of a fitted fusion temperature."""

CONFLICT_AGREEMENT = 0.75
"""A segment with two or more modalities that count (quality >= :data:`COUNTING_QUALITY`) whose
``agreement`` is below this is a conflict (``conflict`` column, counted by ``mser summary``). With
two branches it means one of them gives the fused label less than half of its own top probability."""

COUNTING_QUALITY = 0.5
"""A modality whose ``<m>_quality`` is below this on a segment (a static face) does not make a conflict."""


class Fusion(Protocol):
    """What the pipeline and the evaluation need from a fusion."""

    name: str

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities the fusion reads (a segment's others never influence its result)."""
        ...

    def fuse(self, segments: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]: ...

    def describe(self) -> dict: ...


def modality_probabilities(segments: pd.DataFrame, modality: str) -> tuple[np.ndarray, np.ndarray]:
    """One modality's ``<m>_<label>`` columns and ``<m>_present`` flags.

    Returns:
        ``(probabilities (n, 7) float64, present (n,) bool)``; a modality without columns in
        ``segments`` is absent on every row.

    Raises:
        ValueError: ``<m>_present`` exists but a probability column is missing, or a present row
            holds a non-finite probability.
    """
    n = len(segments)
    if f"{modality}_present" not in segments:
        return np.full((n, len(EMOTIONS)), np.nan), np.zeros(n, dtype=bool)
    columns = [f"{modality}_{label}" for label in EMOTIONS]
    missing = [c for c in columns if c not in segments]
    if missing:
        raise ValueError(f"segments have {modality}_present but lack the columns {missing}")
    present = segments[f"{modality}_present"].fillna(False).to_numpy(dtype=bool)
    probabilities = segments[columns].to_numpy(dtype=np.float64)
    if not np.isfinite(probabilities[present]).all():
        rows = np.flatnonzero(present & ~np.isfinite(probabilities).all(axis=1))
        raise ValueError(f"{modality} probabilities are NaN or infinite on present rows {rows[:5].tolist()}")
    return probabilities, present


def modality_quality(segments: pd.DataFrame, modality: str) -> np.ndarray:
    """The ``<m>_quality`` column in [0, 1] (1.0 where the table has none, or where it is null).

    Only the face has one today (:func:`multimodal_ser.face.segments.face_quality`: frames seen,
    a static face); it scales that modality's evidence on each segment.

    Raises:
        ValueError: a quality outside [0, 1].
    """
    column = f"{modality}_quality"
    if column not in segments:
        return np.ones(len(segments))
    quality = segments[column].to_numpy(dtype=np.float64, na_value=np.nan)
    quality = np.where(np.isnan(quality), 1.0, quality)
    if ((quality < 0) | (quality > 1)).any():
        raise ValueError(f"{column} must be in [0, 1], found {quality[(quality < 0) | (quality > 1)][:3].tolist()}")
    return quality


def targets(labels: Sequence[str], n: int) -> np.ndarray:
    """Class indices ``(n,)`` of label names; raises ValueError naming unknown labels."""
    if len(labels) != n:
        raise ValueError(f"labels must have one entry per segment ({n}), not {len(labels)}")
    index = {label: i for i, label in enumerate(EMOTIONS)}
    bad = [label for label in labels if label not in index]
    if bad:
        raise ValueError(f"labels must be names of {EMOTIONS}; found {sorted(set(map(str, bad)))[:5]}")
    return np.array([index[label] for label in labels], dtype=np.int64)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities ``(n, k)`` of logits ``(n, k)``: each row's softmax (rows must be finite)."""
    z = logits - logits.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def presence_patterns(segments: pd.DataFrame, modalities: Sequence[str], *, none: str | None = None) -> list:
    """Which of ``modalities`` are present on each segment, as ``"audio+text"`` (``none`` where none is).

    A modality without a ``<m>_present`` column is absent. Returns a list of ``n`` patterns.
    """
    used = [m for m in modalities if f"{m}_present" in segments]
    masks = segments[[f"{m}_present" for m in used]].fillna(False).to_numpy(dtype=bool) if used else np.zeros((len(segments), 0), bool)
    return ["+".join(m for m, p in zip(used, row) if p) or none for row in masks]


def valid_modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    """Distinct known modality names, in :data:`~multimodal_ser.labels.MODALITIES` order."""
    modalities = tuple(modalities)
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities or len(set(modalities)) != len(modalities):
        raise ValueError(f"modalities must be distinct names from {MODALITIES}, not {list(modalities)}")
    return tuple(m for m in MODALITIES if m in modalities)


def agreement(segments: pd.DataFrame, fused: np.ndarray, modalities: Sequence[str]) -> np.ndarray:
    """How far the present branches back the fused label.

    For each present modality, the probability it gives to the fused label divided by the
    largest probability it gives to any label (1.0 when its own top label is the fused one, near 0
    when it finds the fused label unlikely); averaged over the present modalities, each weighted
    by its ``<m>_quality`` (:func:`modality_quality`), so a static face barely counts.

    Args:
        segments: the modality columns.
        fused: ``(n, 7)`` fused probabilities (NaN rows where nothing is present).
        modalities: the modalities the fusion reads.

    Returns:
        shape ``(n,)`` in [0, 1]; NaN where no modality is present.
    """
    n = len(segments)
    best = np.argmax(np.nan_to_num(fused, nan=-1.0), axis=1) if n else np.zeros(0, dtype=int)
    total, weight = np.zeros(n), np.zeros(n)
    for m in modalities:
        probabilities, present = modality_probabilities(segments, m)
        if not present.any():
            continue
        p = np.nan_to_num(probabilities[present], nan=0.0)
        ratio = p[np.arange(len(p)), best[present]] / np.clip(p.max(axis=1), EPS, None)
        w = np.clip(modality_quality(segments, m)[present], 1e-3, None)
        total[present] += w * ratio
        weight[present] += w
    with np.errstate(invalid="ignore"):
        return np.where(weight > 0, total / np.maximum(weight, 1e-12), np.nan)


def _counting(segments: pd.DataFrame, modalities: Sequence[str]) -> np.ndarray:
    """How many modalities are present with quality >= :data:`COUNTING_QUALITY`, per segment."""
    count = np.zeros(len(segments), dtype=int)
    for m in modalities:
        _, present = modality_probabilities(segments, m)
        count += present & (modality_quality(segments, m) >= COUNTING_QUALITY)
    return count


def fused_columns(segments: pd.DataFrame, fusion: Fusion) -> pd.DataFrame:
    """The fused columns of ``segments.parquet``, one row per segment.

    Returns:
        ``label``, ``confidence``, ``fused_<label>``, ``fused_from`` (the modalities pooled, joined
        by ``+``), ``runner_up`` (the second most probable fused label), ``agreement`` (see
        :func:`agreement`) and ``conflict`` (two or more modalities that count and agreement below
        :data:`CONFLICT_AGREEMENT`); nulls where no modality is present.
    """
    probs, present = fusion.fuse(segments)
    n = len(segments)
    order = np.argsort(-np.nan_to_num(probs, nan=-1.0), axis=1, kind="stable") if n else np.zeros((0, 2), dtype=int)
    best = order[:, 0] if n else np.zeros(0, dtype=int)
    out = pd.DataFrame(index=segments.index)
    out["label"] = pd.Series([EMOTIONS[i] if p else None for i, p in zip(best, present)], index=segments.index, dtype=object)
    out["confidence"] = np.where(present, probs[np.arange(n), best] if n else 0.0, np.nan)
    for j, label in enumerate(EMOTIONS):
        out[f"fused_{label}"] = probs[:, j]
    used = [m for m in fusion.modalities if f"{m}_present" in segments]
    out["fused_from"] = pd.Series(presence_patterns(segments, used), index=segments.index, dtype=object)
    out["runner_up"] = pd.Series(
        [EMOTIONS[row[1]] if p else None for row, p in zip(order, present)], index=segments.index, dtype=object
    )
    agree = agreement(segments, probs, used)
    out["agreement"] = np.where(present, agree, np.nan)
    several = _counting(segments, used) >= 2
    out["conflict"] = pd.Series(
        pd.array([bool(s and a < CONFLICT_AGREEMENT) if p else None for s, a, p in zip(several, agree, present)], dtype="boolean"),
        index=segments.index,
    )
    return out
