"""Late fusion: a reliability-weighted log-linear pool of each branch's evidence.

For the modalities ``m`` present on a segment::

    logit(y) = Σ_m  w_m · q_m · e_m(y) / T,   e_m(y) = log p̃_m(y) − log π_m(y),   p̃_m = (1 − λ_m) p_m + λ_m π_m

- ``p_m``: the branch's calibrated probabilities (each head stores a temperature fitted on
  held-out data of its own, see :mod:`multimodal_ser.calibration`);
- ``λ_m`` in [0, 1): the branch's lapse, the chance that its reading of a segment says nothing
  about it (the words of a sentence spoken with another feeling than its words carry). It bounds
  the evidence a branch can give against a class by ``log λ_m``, so no branch can veto a class the
  others see, while its evidence *for* a class is not capped: emotional words count, neutral words
  spoken in anger do not outvote the voice;
- ``π_m``: the branch's prior, its mean calibrated prediction on held-out data: the evidence is
  what the branch says about *this* segment beyond what it says about everything. A branch that
  repeats its usual distribution (the words of a neutral sentence) moves the result little;
- ``κ_m`` in [0, 1]: the branch's *neutral say*, its say on a segment it reads as neutral, where
  another branch is present. ``b_m = log(p̃_m(¬neutral) / π_m(¬neutral)) − e_m(neutral)`` is the
  branch's evidence that the segment is emotional rather than neutral; where ``b_m < 0`` and
  another branch is present, all of ``e_m`` is scaled by ``κ_m``. With ``κ_words = 0``, neutral
  words say nothing beside a voice (most sentences of any feeling are neutral in words, and what a
  neutral sentence seems to say against one emotion or another is noise), while emotional words
  keep their full say; alone, the words decide as before;
- ``q_m`` in [0, 1]: the segment's ``<m>_quality`` column where there is one (the face: frames
  seen, a static face counts for little; see :mod:`multimodal_ser.face.segments`), else 1;
- ``w_m >= 0``: reliability weights and ``T``: a temperature, learned on held-out predictions
  (:func:`fit_late_fusion`, stacking: minimum log-loss).

A missing modality drops out of the sum (it is never read as "neutral"); a segment with no
modality present gets no label. Every emotion is equally likely a priori (no class bias), so the
fused distribution does not inherit the class frequencies of any branch's training data.

Without priors (``π_m`` uniform) and with every weight 1 this is the product of the branches'
distributions, the package's first default; it let one over-confident branch outvote the others,
and is kept only for comparison. The packaged default (:mod:`multimodal_ser.fusion.default`) is
learned. Parameters are saved as a small JSON file with their provenance (:meth:`LateFusion.save`,
:func:`load_late_fusion`).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import log_softmax, logsumexp

from .. import __version__
from ..calibration import fit_temperature as fit_probability_temperature
from ..errors import ModelError
from ..files import atomic_output
from ..labels import EMOTIONS, MODALITIES
from .base import EPS, modality_probabilities, modality_quality, targets, valid_modalities

log = logging.getLogger(__name__)

LATE_FUSION_FORMAT = "multimodal-ser/late-fusion"
LATE_FUSION_VERSION = 6
"""Version 2 added ``priors``, version 3 ``lapse`` (one for every branch), version 4 a lapse per
branch, version 6 ``neutral_say``; older files are read with uniform priors, no lapse and a full
neutral say. Version 5 files, whose neutral say withdrew only the evidence for neutral, are refused."""

NEUTRAL = EMOTIONS.index("neutral")
"""Index of the class a branch's neutral say (``κ_m``) is about."""

MAX_EFFECTIVE_WEIGHT = 50.0
"""Upper bound of a stacked weight over temperature, ``w_m / T`` (keeps the optimiser finite)."""


def _valid_prior(modality: str, prior) -> tuple[float, ...]:
    values = np.asarray(prior, dtype=np.float64)
    if values.shape != (len(EMOTIONS),) or not np.isfinite(values).all() or (values <= 0).any():
        raise ValueError(f"prior of {modality} must be {len(EMOTIONS)} positive numbers over {EMOTIONS}, not {prior!r}")
    return tuple(float(v) for v in values / values.sum())


@dataclasses.dataclass(frozen=True)
class LateFusion:
    """Reliability weights, branch priors and a temperature (see the module docstring).

    Args:
        weights: ``{modality: weight >= 0}``; a modality with weight 0 or not named is ignored.
        temperature: divides the pooled log-probabilities; > 1 softens, < 1 sharpens.
        priors: ``{modality: 7 probabilities over EMOTIONS}``; a modality without one is read
            against a uniform prior.
        lapse: ``λ_m`` of the module docstring, in [0, 1): ``{modality: lapse}`` (a modality not
            named gets 0) or one number for every modality. Stored as a mapping over all modalities.
        neutral_say: ``κ_m`` of the module docstring, in [0, 1]: ``{modality: κ}`` (a modality not
            named gets 1, its full say) or one number for every modality. Stored as a mapping.
        provenance: where learned parameters came from (data, fit metrics); shown by
            :meth:`describe` and saved by :meth:`save`.
    """

    weights: dict[str, float] = dataclasses.field(default_factory=lambda: {m: 1.0 for m in MODALITIES})
    temperature: float = 1.0
    priors: dict[str, tuple[float, ...]] = dataclasses.field(default_factory=dict)
    lapse: Mapping[str, float] | float = 0.0
    neutral_say: Mapping[str, float] | float = 1.0
    name: str = "late"
    provenance: dict = dataclasses.field(default_factory=dict, compare=False)

    def __post_init__(self):
        unknown = (set(self.weights) | set(self.priors)) - set(MODALITIES)
        if unknown:
            raise ValueError(f"fusion weights or priors for unknown modalities {sorted(unknown)}; known: {MODALITIES}")
        if any(not np.isfinite(w) or w < 0 for w in self.weights.values()):
            raise ValueError(f"fusion weights must be finite and >= 0, not {self.weights}")
        if not np.isfinite(self.temperature) or self.temperature <= 0:
            raise ValueError(f"temperature must be positive, not {self.temperature}")
        lapse = per_modality(self.lapse, absent=0.0, name="lapse")
        if any(not 0 <= v < 1 for v in lapse.values()):
            raise ValueError(f"lapse must be in [0, 1), not {self.lapse}")
        object.__setattr__(self, "lapse", lapse)
        neutral_say = per_modality(self.neutral_say, absent=1.0, name="neutral say")
        if any(not 0 <= v <= 1 for v in neutral_say.values()):
            raise ValueError(f"neutral say must be in [0, 1], not {self.neutral_say}")
        object.__setattr__(self, "neutral_say", neutral_say)
        object.__setattr__(self, "priors", {m: _valid_prior(m, p) for m, p in self.priors.items()})

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modalities with a positive weight, in :data:`~multimodal_ser.labels.MODALITIES` order."""
        return tuple(m for m in MODALITIES if self.weights.get(m, 0.0) > 0)

    def evidence(self, segments: pd.DataFrame, modalities: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``q_m e_m`` per modality, zero where absent: ``(M, n, 7)``, and presence ``(M, n)``."""
        return evidence(segments, modalities, self.priors, lapse=self.lapse, neutral_say=self.neutral_say)

    def fuse(self, segments: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Pool the ``<m>_<label>`` columns of ``segments``.

        Returns:
            ``(probabilities (n, 7), present (n,))``; rows where no weighted modality is present
            are NaN with ``present`` False.
        """
        used = [m for m in self.modalities if f"{m}_present" in segments]
        logs, masks = self.evidence(segments, used)
        weights = np.array([self.weights[m] for m in used]).reshape(-1, 1, 1)
        logits = (weights * logs).sum(axis=0) / self.temperature
        present = masks.any(axis=0)
        fused = np.exp(log_softmax(logits, axis=1))
        fused[~present] = np.nan
        return fused, present

    def describe(self) -> dict:
        """JSON-ready summary for output metadata: name, weights, temperature, priors, provenance."""
        out = {"fusion": self.name, "weights": dict(self.weights), "temperature": self.temperature, "lapse": dict(self.lapse),
               "neutral_say": dict(self.neutral_say)}
        if self.priors:
            out["priors"] = {m: list(p) for m, p in self.priors.items()}
        if self.provenance:
            out["provenance"] = self.provenance
        return out

    def document(self) -> dict:
        """The JSON document :meth:`save` writes."""
        return {
            "format": LATE_FUSION_FORMAT,
            "version": LATE_FUSION_VERSION,
            "labels": list(EMOTIONS),
            "weights": {m: float(w) for m, w in self.weights.items()},
            "temperature": float(self.temperature),
            "lapse": {m: float(v) for m, v in self.lapse.items()},
            "neutral_say": {m: float(v) for m, v in self.neutral_say.items()},
            "priors": {m: list(p) for m, p in self.priors.items()},
            "provenance": self.provenance,
        }

    def save(self, path: str | os.PathLike, **extra) -> Path:
        """Write the parameters and provenance as JSON (read back by :func:`load_late_fusion`);
        ``extra`` keys are added to the document."""
        path = Path(path)
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps({**self.document(), **extra}, indent=2, sort_keys=True) + "\n")
        return path


def per_modality(value: Mapping[str, float] | float, *, absent: float, name: str) -> dict[str, float]:
    """``{modality: value}`` over every modality of :data:`~multimodal_ser.labels.MODALITIES` from a
    mapping (modalities not named get ``absent``) or one number for all.

    Raises:
        ValueError: an unknown modality (named as the ``name`` of the parameter).
    """
    if isinstance(value, Mapping):
        unknown = set(value) - set(MODALITIES)
        if unknown:
            raise ValueError(f"{name} for unknown modalities {sorted(unknown)}; known: {MODALITIES}")
        return {m: float(value.get(m, absent)) for m in MODALITIES}
    return {m: float(value) for m in MODALITIES}


def evidence(
    segments: pd.DataFrame, modalities: Sequence[str], priors: Mapping[str, Sequence[float]] | None = None, *,
    lapse: Mapping[str, float] | float = 0.0, neutral_say: Mapping[str, float] | float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Each modality's evidence ``q_m e_m`` of the module docstring, zero where absent.

    Args:
        lapse: ``{modality: λ_m}`` or one ``λ`` for all (see :func:`per_modality`).
        neutral_say: ``{modality: κ_m}`` or one ``κ`` for all; modalities not named get 1.

    Returns:
        ``(M, n, 7)`` float64 and presence ``(M, n)`` bool.
    """
    priors = priors or {}
    lapses = per_modality(lapse, absent=0.0, name="lapse")
    says = per_modality(neutral_say, absent=1.0, name="neutral say")
    n = len(segments)
    read = [modality_probabilities(segments, m) for m in modalities]
    presence = np.array([present for _, present in read], dtype=bool).reshape(len(modalities), n)
    logs = []
    for i, (m, (probabilities, present)) in enumerate(zip(modalities, read)):
        prior = np.asarray(priors[m], dtype=np.float64) if m in priors else np.full(len(EMOTIONS), 1.0 / len(EMOTIONS))
        mixed = (1.0 - lapses[m]) * np.nan_to_num(probabilities, nan=1.0) + lapses[m] * prior
        log_ratio = np.log(np.clip(mixed, EPS, 1.0)) - np.log(prior)
        if says[m] < 1.0:
            others = np.delete(presence, i, axis=0).any(axis=0)
            reads_neutral = emotional_evidence(log_ratio, prior) < 0.0
            log_ratio *= np.where(others & reads_neutral, says[m], 1.0)[:, None]
        quality = modality_quality(segments, m)
        logs.append(np.where(present[:, None], quality[:, None] * log_ratio, 0.0))
    if not logs:
        return np.zeros((0, n, len(EMOTIONS))), presence
    return np.stack(logs), presence


def emotional_evidence(log_ratio: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """``b = log(p̃(¬neutral) / π(¬neutral)) − e(neutral)``: a branch's evidence that a segment is
    emotional rather than neutral, from its ``e = log p̃ − log π`` ``(n, 7)`` and prior ``(7,)``; ``(n,)``."""
    emotions = np.arange(len(EMOTIONS)) != NEUTRAL
    emotional = logsumexp(log_ratio[:, emotions] + np.log(prior[emotions]), axis=1) - np.log(prior[emotions].sum())
    return emotional - log_ratio[:, NEUTRAL]


def load_late_fusion(path: str | os.PathLike) -> LateFusion:
    """Read late-fusion parameters written by :meth:`LateFusion.save` (``mser analyze --fusion-weights``).

    The returned fusion's provenance also names the file and its sha256.

    Raises:
        ModelError: the file is missing, not JSON, of another format or version, or its labels,
            weights, priors or temperature are invalid.
    """
    from ..files import sha256_file

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
    if document.get("version") not in range(1, LATE_FUSION_VERSION + 1):
        raise ModelError(f"{path}: version must be 1 to {LATE_FUSION_VERSION}, found {document.get('version')!r}")
    if document.get("version") == 5:
        raise ModelError(f"{path}: version 5, whose neutral say followed an earlier rule: learn it again with 'mser train fusion'")
    if document.get("labels") != list(EMOTIONS):
        raise ModelError(f"{path}: labels must be {list(EMOTIONS)}, found {document.get('labels')}")
    provenance = dict(document.get("provenance") or {})
    provenance["file"] = {"name": path.name, "sha256": sha256_file(path)}
    try:
        return LateFusion(
            weights={str(m): float(w) for m, w in document["weights"].items()},
            temperature=float(document["temperature"]),
            priors={str(m): p for m, p in (document.get("priors") or {}).items()},
            lapse=document.get("lapse", 0.0),
            neutral_say=document.get("neutral_say", 1.0),
            provenance=provenance,
        )
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ModelError(f"{path}: invalid late-fusion parameters ({e})") from e


def _nll_and_gradient(effective: np.ndarray, logs: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, np.ndarray]:
    """Weighted mean negative log-likelihood of ``softmax(Σ_m a_m e_m)`` and its gradient in ``a``
    (``w``: row weights summing to 1)."""
    logits = np.tensordot(effective, logs, axes=1)  # (n, 7)
    log_q = log_softmax(logits, axis=1)
    rows = np.arange(len(y))
    nll = -(w * log_q[rows, y]).sum()
    q = np.exp(log_q)
    # d nll / d a_m = Σ_i w_i ( E_q[e_m] - e_m[y] )
    gradient = (((q[None] * logs).sum(axis=2) - logs[:, rows, y]) * w[None]).sum(axis=1)
    return float(nll), gradient


def balanced_row_weights(labels: np.ndarray, sources: np.ndarray | None = None) -> np.ndarray:
    """Row weights (summing to 1) that give every source the same total, and within a source every
    class present the same total: the log-loss then matches unweighted accuracy, not the class
    frequencies of whichever corpus is largest.

    Args:
        labels: ``(n,)`` class indices or names.
        sources: ``(n,)`` source names, or None (one source).
    """
    labels = np.asarray(labels, dtype=object)
    sources = np.zeros(len(labels), dtype=object) if sources is None else np.asarray(sources, dtype=object)
    weights = np.zeros(len(labels))
    names = sorted(set(sources), key=str)
    for source in names:
        inside = sources == source
        classes = sorted(set(labels[inside]), key=str)
        for c in classes:
            rows = inside & (labels == c)
            weights[rows] = 1.0 / (len(names) * len(classes) * rows.sum())
    return weights


def fit_late_fusion(
    segments: pd.DataFrame,
    labels: Sequence[str],
    *,
    modalities: Sequence[str] = MODALITIES,
    priors: Mapping[str, Sequence[float]] | None = None,
    row_weights: np.ndarray | None = None,
    fit_mask: Mapping[str, np.ndarray] | None = None,
    fixed: Mapping[str, float] | None = None,
    lapse: Mapping[str, float] | float = 0.0,
    neutral_say: Mapping[str, float] | float = 1.0,
    provenance: dict | None = None,
) -> LateFusion:
    """Learn reliability weights and a temperature by stacking.

    Minimises the (weighted) mean log-loss of the fused distribution over the segments where at
    least one of ``modalities`` is present, in the effective weights ``a_m = w_m / T >= 0``
    (L-BFGS-B, exact gradient; convex in ``a``). Absent modalities contribute nothing, exactly as
    in :meth:`LateFusion.fuse`. The result is written as reliability weights relative to the most
    reliable modality (1.0) and the temperature ``T = 1 / max_m a_m``.

    The predictions in ``segments`` must be held out from whatever trained the branches, and the
    segments used for fitting must not be the ones the result is measured on.

    Args:
        segments: per-modality ``<m>_present``, ``<m>_<label>`` (and optional ``<m>_quality``)
            columns, one row per labelled segment.
        labels: the true label of each row, names of :data:`~multimodal_ser.labels.EMOTIONS`.
        modalities: the modalities to weigh; the others get weight 0. A modality never present
            in ``segments`` gets weight 0 (with a warning), unless ``fixed``.
        priors: each branch's prior (see the module docstring), stored in the result.
        row_weights: ``(n,)`` non-negative weight of each row in the log-loss (e.g.
            :func:`balanced_row_weights`); None weighs rows equally.
        fit_mask: ``{modality: (n,) bool}``: rows on which that modality's evidence enters the
            fit (its evidence is left out elsewhere, e.g. on a corpus where it carries no
            information about the label by construction). Default: everywhere.
        fixed: ``{modality: effective weight a_m}`` kept as given instead of fitted (e.g. learned
            on other data where that modality is informative).
        lapse: ``λ_m`` of the module docstring (a mapping or one number), kept as given and stored in the result.
        neutral_say: ``κ_m`` of the module docstring (a mapping or one number), kept as given and stored.
        provenance: stored in the result (for example the data it was fitted on).

    Raises:
        ValueError: bad labels or modalities, no row with a modality present, or no modality
            that carries any information about the labels (every weight would be 0).
    """
    modalities = valid_modalities(modalities)
    y = targets(labels, len(segments))
    fixed = dict(fixed or {})
    logs, masks = evidence(segments, modalities, priors, lapse=lapse, neutral_say=neutral_say)
    if fit_mask is not None:
        for i, m in enumerate(modalities):
            if m in fit_mask:
                keep = np.asarray(fit_mask[m], dtype=bool)
                logs[i] = np.where(keep[:, None], logs[i], 0.0)
                masks[i] = masks[i] & keep
    seen = masks.any(axis=1)
    for m, s in zip(modalities, seen):
        if not s and m not in fixed:
            log.warning("%s is never present in the fitting data: its weight is 0", m)
    free = [i for i, m in enumerate(modalities) if seen[i] and m not in fixed]
    if not free and not fixed:
        raise ValueError(f"no segment has any of {list(modalities)} present; nothing to fit")
    rows = masks.any(axis=0)
    if not rows.any():
        raise ValueError(f"no segment has any of {list(modalities)} present; nothing to fit")
    w = np.ones(len(y)) if row_weights is None else np.asarray(row_weights, dtype=np.float64)
    if w.shape != (len(y),) or (w < 0).any() or not np.isfinite(w).all():
        raise ValueError(f"row_weights must be {len(y)} finite non-negative numbers")
    w = w[rows] / w[rows].sum()
    # the fixed modalities enter as one extra "modality" of effective weight 1
    stacked = logs[free][:, rows]
    if fixed:
        offset = sum(fixed[m] * logs[i][rows] for i, m in enumerate(modalities) if m in fixed)
        stacked = np.concatenate([stacked, np.asarray(offset)[None]])
    tail = np.ones(1 if fixed else 0)
    y_rows = y[rows]

    def objective(a: np.ndarray) -> tuple[float, np.ndarray]:
        nll, gradient = _nll_and_gradient(np.concatenate([a, tail]), stacked, y_rows, w)
        return nll, gradient[: len(a)]

    if free:
        result = minimize(objective, x0=np.ones(len(free)), jac=True, method="L-BFGS-B",
                          bounds=[(0.0, MAX_EFFECTIVE_WEIGHT)] * len(free))
        if not result.success:
            log.warning("stacking optimiser stopped early: %s", result.message)
        effective_free, nll = np.asarray(result.x), float(result.fun)
    else:
        effective_free, nll = np.zeros(0), objective(np.zeros(0))[0]
    effective = {m: 0.0 for m in modalities}
    effective.update({modalities[i]: float(a) for i, a in zip(free, effective_free)})
    effective.update({m: float(a) for m, a in fixed.items() if m in modalities})
    largest = max(effective.values())
    if largest <= 1e-8:
        raise ValueError(f"none of {list(modalities)} carries information about the labels: every stacked weight is 0")
    temperature = 1.0 / largest
    details = {
        "method": "stacking: minimum log-loss over w/T >= 0 (L-BFGS-B) of the prior-relative evidence",
        "n_segments": int(rows.sum()),
        "log_loss": nll,
        "fixed": fixed or None,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__,
    }
    return LateFusion(
        weights={m: a * temperature for m, a in effective.items()},
        temperature=float(temperature),
        priors=dict(priors or {}),
        lapse=lapse,
        neutral_say=neutral_say,
        provenance={**details, **(provenance or {})},
    )


def fit_temperature(fusion: LateFusion, segments: pd.DataFrame, labels: Sequence[str]) -> LateFusion:
    """Temperature scaling: the fusion's weights kept, ``T`` chosen for minimum log-loss on ``segments``
    (:func:`multimodal_ser.calibration.fit_temperature` on the pool at ``T = 1``).

    Returns:
        A copy of ``fusion`` with the fitted temperature; its provenance gains ``temperature_fit``.

    Raises:
        ValueError: bad labels, or no segment where a weighted modality is present.
    """
    y = targets(labels, len(segments))
    pooled, present = dataclasses.replace(fusion, temperature=1.0).fuse(segments)
    if not present.any():
        raise ValueError(f"no segment has any of {list(fusion.modalities)} present; cannot fit a temperature")
    temperature = fit_probability_temperature(pooled[present], y[present])
    calibrated = dataclasses.replace(fusion, temperature=temperature).fuse(segments)[0][present]
    log_loss = float(-np.log(np.clip(calibrated[np.arange(present.sum()), y[present]], 1e-12, 1.0)).mean())
    provenance = {**fusion.provenance, "temperature_fit": {"n_segments": int(present.sum()), "log_loss": log_loss}}
    return dataclasses.replace(fusion, temperature=temperature, provenance=provenance)
