"""Fusion: one emotion distribution per segment from the modalities that are present.

Late fusion is a weighted log-linear pool: ``p(y) ∝ exp(Σ_m w_m · log p_m(y) / T)`` over the
modalities ``m`` present in the segment. A missing modality drops out of the sum (it is never
read as "neutral"); a segment with no modality present gets no label.

The defaults (every weight 1.0, ``T = 1``) are the product of the branches' distributions: each
branch counts as calibrated evidence and none is favoured. Weights and temperature can be learned
on labelled data (:func:`fit_late_fusion`, stacking: minimum log-loss on held-out predictions) or
the temperature alone (:func:`fit_temperature`, temperature scaling), then saved as a small JSON
file with its provenance (:meth:`LateFusion.save`, :func:`load_late_fusion`).

Every fusion (this one and :class:`~multimodal_ser.attention_fusion.AttentionFusion`) offers the
same interface, :class:`Fusion`: ``fuse(segments) -> (probabilities (n, 7), present (n,))``,
``describe()``, ``name`` and ``modalities``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from scipy.optimize import minimize, minimize_scalar
from scipy.special import log_softmax

from . import __version__
from .errors import ModelError
from .files import atomic_output
from .labels import EMOTIONS, MODALITIES

log = logging.getLogger(__name__)

_EPS = 1e-6
"""Probabilities are clipped to at least this before their log is taken."""

LATE_FUSION_FORMAT = "multimodal-ser/late-fusion"
LATE_FUSION_VERSION = 1

_MAX_EFFECTIVE_WEIGHT = 50.0
"""Upper bound of a stacked weight over temperature, ``w_m / T`` (keeps the optimiser finite)."""
_TEMPERATURE_RANGE = (0.05, 20.0)


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


def _log_evidence(segments: pd.DataFrame, modalities: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``log p_m`` of each modality, zero where absent: ``(n_modalities, n, 7)``, and presence ``(n_modalities, n)``."""
    logs, masks = [], []
    for m in modalities:
        probabilities, present = modality_probabilities(segments, m)
        logs.append(np.where(present[:, None], np.log(np.clip(np.nan_to_num(probabilities, nan=1.0), _EPS, 1.0)), 0.0))
        masks.append(present)
    n = len(segments)
    if not logs:
        return np.zeros((0, n, len(EMOTIONS))), np.zeros((0, n), dtype=bool)
    return np.stack(logs), np.stack(masks)


@dataclasses.dataclass(frozen=True)
class LateFusion:
    """Reliability weights per modality and a temperature that calibrates the pooled confidence.

    Args:
        weights: ``{modality: weight >= 0}``; a modality with weight 0 or not named is ignored.
        temperature: divides the pooled log-probabilities; > 1 softens, < 1 sharpens.
        provenance: where learned parameters came from (data, fit metrics); shown by
            :meth:`describe` and saved by :meth:`save`.
    """

    weights: dict[str, float] = dataclasses.field(default_factory=lambda: {m: 1.0 for m in MODALITIES})
    temperature: float = 1.0
    name: str = "late"
    provenance: dict = dataclasses.field(default_factory=dict, compare=False)

    def __post_init__(self):
        unknown = set(self.weights) - set(MODALITIES)
        if unknown:
            raise ValueError(f"fusion weights for unknown modalities {sorted(unknown)}; known: {MODALITIES}")
        if any(not np.isfinite(w) or w < 0 for w in self.weights.values()):
            raise ValueError(f"fusion weights must be finite and >= 0, not {self.weights}")
        if not np.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"temperature must be positive, not {self.temperature}")

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities with a positive weight, in :data:`~multimodal_ser.labels.MODALITIES` order."""
        return tuple(m for m in MODALITIES if self.weights.get(m, 0.0) > 0)

    def fuse(self, segments: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Pool the ``<m>_<label>`` columns of ``segments``.

        Returns:
            ``(probabilities (n, 7), present (n,))``; rows where no weighted modality is present
            are NaN with ``present`` False.
        """
        used = [m for m in self.modalities if f"{m}_present" in segments]
        logs, masks = _log_evidence(segments, used)
        weights = np.array([self.weights[m] for m in used]).reshape(-1, 1, 1)
        logits = (weights * logs).sum(axis=0) / self.temperature
        present = masks.any(axis=0)
        fused = np.exp(log_softmax(logits, axis=1))
        fused[~present] = np.nan
        return fused, present

    def describe(self) -> dict:
        """JSON-ready summary for output metadata: name, weights, temperature, provenance if any."""
        out = {"fusion": self.name, "weights": dict(self.weights), "temperature": self.temperature}
        if self.provenance:
            out["provenance"] = self.provenance
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write weights, temperature and provenance as JSON (read back by :func:`load_late_fusion`)."""
        path = Path(path)
        document = {
            "format": LATE_FUSION_FORMAT,
            "version": LATE_FUSION_VERSION,
            "labels": list(EMOTIONS),
            "weights": {m: float(w) for m, w in self.weights.items()},
            "temperature": float(self.temperature),
            "provenance": self.provenance,
        }
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
        return path


def load_late_fusion(path: str | os.PathLike) -> LateFusion:
    """Read late-fusion parameters written by :meth:`LateFusion.save` (``mser analyze --fusion-weights``).

    The returned fusion's provenance also names the file and its sha256.

    Raises:
        ModelError: the file is missing, not JSON, of another format or version, or its labels,
            weights or temperature are invalid.
    """
    from .files import sha256_file

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: late-fusion file not found")
    try:
        document = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: not a JSON late-fusion file ({e})") from e
    if not isinstance(document, dict) or document.get("format") != LATE_FUSION_FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise ModelError(f"{path}: format must be {LATE_FUSION_FORMAT!r}, found {found!r}")
    if document.get("version") != LATE_FUSION_VERSION:
        raise ModelError(f"{path}: version must be {LATE_FUSION_VERSION}, found {document.get('version')!r}")
    if document.get("labels") != list(EMOTIONS):
        raise ModelError(f"{path}: labels must be {list(EMOTIONS)}, found {document.get('labels')}")
    provenance = dict(document.get("provenance") or {})
    provenance["file"] = {"name": path.name, "sha256": sha256_file(path)}
    try:
        return LateFusion(
            weights={str(m): float(w) for m, w in document["weights"].items()},
            temperature=float(document["temperature"]),
            provenance=provenance,
        )
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ModelError(f"{path}: invalid late-fusion parameters ({e})") from e


def _targets(labels: Sequence[str], n: int) -> np.ndarray:
    if len(labels) != n:
        raise ValueError(f"labels must have one entry per segment ({n}), not {len(labels)}")
    index = {label: i for i, label in enumerate(EMOTIONS)}
    bad = [label for label in labels if label not in index]
    if bad:
        raise ValueError(f"labels must be names of {EMOTIONS}; found {sorted(set(map(str, bad)))[:5]}")
    return np.array([index[label] for label in labels], dtype=np.int64)


def _nll_and_gradient(effective: np.ndarray, logs: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean negative log-likelihood of ``softmax(Σ_m a_m log p_m)`` and its gradient in ``a``."""
    logits = np.tensordot(effective, logs, axes=1)  # (n, 7)
    log_q = log_softmax(logits, axis=1)
    rows = np.arange(len(y))
    nll = -log_q[rows, y].mean()
    q = np.exp(log_q)
    # d nll / d a_m = mean_i ( E_q[log p_m] - log p_m[y] )
    gradient = ((q[None] * logs).sum(axis=2) - logs[:, rows, y]).mean(axis=1)
    return float(nll), gradient


def fit_late_fusion(
    segments: pd.DataFrame,
    labels: Sequence[str],
    *,
    modalities: Sequence[str] = MODALITIES,
    provenance: dict | None = None,
) -> LateFusion:
    """Learn reliability weights and a temperature by stacking.

    Minimises the mean log-loss of the fused distribution over the segments where at least one of
    ``modalities`` is present, in the effective weights ``a_m = w_m / T >= 0`` (L-BFGS-B, exact
    gradient; the problem is convex in ``a``). Absent modalities contribute nothing, exactly as in
    :meth:`LateFusion.fuse`. The result is written as reliability weights relative to the most
    reliable modality (which gets 1.0, as every modality does in the defaults; a useless one gets
    0) and the temperature ``T = 1 / max_m a_m``: the weights say which modality to trust, the
    temperature how sharp the pooled distribution should be.

    The predictions in ``segments`` must be held out from whatever trained the branches, and the
    segments used for fitting must not be the ones the result is measured on.

    Args:
        segments: per-modality ``<m>_present`` and ``<m>_<label>`` columns (see
            :func:`multimodal_ser.grid.modality_table`), one row per labelled segment.
        labels: the true label of each row, names of :data:`~multimodal_ser.labels.EMOTIONS`.
        modalities: the modalities to weigh; the others get weight 0. A modality never present
            in ``segments`` gets weight 0 (with a warning).
        provenance: stored in the result (for example the data it was fitted on).

    Raises:
        ValueError: bad labels or modalities, no row with a modality present, or no modality
            that carries any information about the labels (every weight would be 0).
    """
    modalities = _valid_modalities(modalities)
    y = _targets(labels, len(segments))
    logs, masks = _log_evidence(segments, modalities)
    seen = masks.any(axis=1)
    for m, s in zip(modalities, seen):
        if not s:
            log.warning("%s is never present in the fitting data: its weight is 0", m)
    fitted = [m for m, s in zip(modalities, seen) if s]
    if not fitted:
        raise ValueError(f"no segment has any of {list(modalities)} present; nothing to fit")
    logs = logs[seen]
    rows = masks[seen].any(axis=0)
    logs, y_rows = logs[:, rows], y[rows]
    result = minimize(
        _nll_and_gradient,
        x0=np.ones(len(fitted)),
        args=(logs, y_rows),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, _MAX_EFFECTIVE_WEIGHT)] * len(fitted),
    )
    effective = np.asarray(result.x)
    if not result.success:
        log.warning("stacking optimiser stopped early: %s", result.message)
    largest = float(effective.max())
    if largest <= 1e-8:
        raise ValueError(f"none of {fitted} carries information about the labels: every stacked weight is 0")
    temperature = 1.0 / largest
    weights = {m: 0.0 for m in modalities}
    weights.update({m: float(a * temperature) for m, a in zip(fitted, effective)})
    nll, _ = _nll_and_gradient(effective, logs, y_rows)
    details = {
        "method": "stacking: minimum log-loss over w/T >= 0 (L-BFGS-B)",
        "n_segments": int(rows.sum()),
        "log_loss": nll,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__,
    }
    return LateFusion(weights=weights, temperature=float(temperature), provenance={**details, **(provenance or {})})


def fit_temperature(fusion: LateFusion, segments: pd.DataFrame, labels: Sequence[str]) -> LateFusion:
    """Temperature scaling: the fusion's weights kept, ``T`` chosen for minimum log-loss on ``segments``.

    Returns:
        A copy of ``fusion`` with the fitted temperature (searched in [0.05, 20]); its provenance
        gains ``temperature_fit``.

    Raises:
        ValueError: bad labels, or no segment where a weighted modality is present.
    """
    y = _targets(labels, len(segments))
    used = [m for m in fusion.modalities if f"{m}_present" in segments]
    logs, masks = _log_evidence(segments, used)
    rows = masks.any(axis=0)
    if not rows.any():
        raise ValueError(f"no segment has any of {used} present; cannot fit a temperature")
    pooled = np.tensordot(np.array([fusion.weights[m] for m in used]), logs[:, rows], axes=1)
    y_rows = y[rows]

    def nll(log_t: float) -> float:
        return float(-log_softmax(pooled / np.exp(log_t), axis=1)[np.arange(len(y_rows)), y_rows].mean())

    low, high = np.log(_TEMPERATURE_RANGE)
    result = minimize_scalar(nll, bounds=(low, high), method="bounded")
    temperature = float(np.exp(result.x))
    provenance = {**fusion.provenance, "temperature_fit": {"n_segments": int(rows.sum()), "log_loss": float(result.fun)}}
    return dataclasses.replace(fusion, temperature=temperature, provenance=provenance)


def _valid_modalities(modalities: Sequence[str]) -> tuple[str, ...]:
    modalities = tuple(modalities)
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities or len(set(modalities)) != len(modalities):
        raise ValueError(f"modalities must be distinct names from {MODALITIES}, not {list(modalities)}")
    return tuple(m for m in MODALITIES if m in modalities)


def load_fusion(kind: str = "late", path: str | os.PathLike | None = None) -> Fusion:
    """The fusion ``mser analyze --fusion KIND [--fusion-weights FILE]`` asks for.

    Args:
        kind: ``"late"`` or ``"attention"``.
        path: for ``late``, a JSON file from :meth:`LateFusion.save` (None: the defaults, every
            weight 1.0 and ``T = 1``); for ``attention``, a safetensors module from
            ``mser train fusion`` (None: the packaged one).

    Raises:
        ValueError: unknown ``kind``.
        ModelError: the file is missing or invalid.
    """
    if kind == "late":
        return LateFusion() if path is None else load_late_fusion(path)
    if kind == "attention":
        from .attention_fusion import load_attention_fusion

        return load_attention_fusion(path)
    raise ValueError(f"fusion kind must be 'late' or 'attention', not {kind!r}")


def fused_columns(segments: pd.DataFrame, fusion: Fusion) -> pd.DataFrame:
    """``label``, ``confidence``, ``fused_<label>`` and ``fused_from`` (the modalities pooled) per row."""
    probs, present = fusion.fuse(segments)
    n = len(segments)
    best = np.argmax(np.nan_to_num(probs, nan=-1.0), axis=1) if n else np.zeros(0, dtype=int)
    out = pd.DataFrame(index=segments.index)
    out["label"] = pd.Series([EMOTIONS[i] if p else None for i, p in zip(best, present)], index=segments.index, dtype=object)
    out["confidence"] = np.where(present, probs[np.arange(n), best] if n else 0.0, np.nan)
    for j, label in enumerate(EMOTIONS):
        out[f"fused_{label}"] = probs[:, j]
    used = [m for m in fusion.modalities if f"{m}_present" in segments]
    masks = segments[[f"{m}_present" for m in used]].fillna(False).to_numpy(dtype=bool) if used else np.zeros((n, 0), dtype=bool)
    out["fused_from"] = pd.Series(
        ["+".join(m for m, p in zip(used, row) if p) or None for row in masks], index=segments.index, dtype=object
    )
    return out
