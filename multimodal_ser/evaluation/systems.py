"""What evaluation compares: each modality alone and each fusion, cross-fitted by group.

:func:`comparison_systems` gives one :class:`System` per row of the comparison: each modality
alone; and for every set of two or more modalities, the packaged default fusion as shipped, late
fusion with equal weights (the old default), late fusion learned by stacking and attention fusion.
Whatever is learned is learned on some groups and measured on others (the folds of
:func:`~multimodal_ser.evaluation.splits.group_folds`), so every item has an out-of-fold prediction.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..errors import ModelError
from ..fusion import LateFusion, balanced_row_weights, fit_late_fusion, fit_temperature, modality_probabilities, softmax
from ..labels import EMOTIONS
from .predict import Predictions
from .splits import validation_split

log = logging.getLogger(__name__)


MIN_GROUPS_ATTENTION = 3
"""Attention fusion trains on some groups, stops early on another and is measured on a third."""


FUSION_SYSTEMS = ("default", "late_equal", "late_learned", "attention")
"""The fusions :func:`~multimodal_ser.evaluation.compare.compare_predictions` can score."""


@dataclasses.dataclass
class System:
    """One row of the comparison: out-of-fold probabilities for every item (NaN where it gives no label)."""

    key: str
    name: str
    kind: str
    modalities: tuple[str, ...]
    probabilities: np.ndarray
    present: np.ndarray
    uncalibrated: np.ndarray | None = None
    """out-of-fold probabilities before temperature scaling (T = 1), for the ECE before/after."""
    calibrated: np.ndarray | None = None
    """for the default late fusion: out-of-fold probabilities with a cross-fitted temperature."""
    parameters: dict = dataclasses.field(default_factory=dict)

    def subset(self, rows: np.ndarray) -> System:
        """The system on the items of the bool mask ``rows`` (without its parameters)."""
        return dataclasses.replace(
            self,
            probabilities=self.probabilities[rows],
            present=self.present[rows],
            uncalibrated=None if self.uncalibrated is None else self.uncalibrated[rows],
            calibrated=None if self.calibrated is None else self.calibrated[rows],
            parameters={},
        )


def _subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    return [s for k in range(2, len(modalities) + 1) for s in itertools.combinations(modalities, k)]


def _restricted(table: pd.DataFrame, keep: Sequence[str], modalities: Sequence[str]) -> pd.DataFrame:
    """A copy of ``table`` where the modalities not in ``keep`` are absent on every row."""
    out = table.copy()
    for m in modalities:
        if m not in keep:
            out[f"{m}_present"] = False
    return out


def _packaged_default(fusions: Sequence[str]):
    """The packaged default fusion, or None (with a warning) when it cannot be loaded."""
    if "default" not in fusions:
        return None
    from ..fusion import load_fusion

    try:
        return load_fusion("default")
    except ModelError as e:
        log.warning("the packaged default fusion is not scored: %s", e)
        return None


def _priors(default) -> dict:
    """The branch priors the packaged late fusion reads evidence against (none for attention)."""
    if isinstance(default, LateFusion):
        return dict(default.priors)
    from ..fusion import load_fusion

    try:
        late = load_fusion("late")
    except ModelError:
        return {}
    return dict(late.priors)


def _as_shipped(default, table: pd.DataFrame, subset: tuple[str, ...], modalities: tuple[str, ...]) -> System:
    """The packaged default fusion applied as it ships (nothing fitted on this data), given only ``subset``."""
    tag = "+".join(subset)
    probabilities, present = default.fuse(_restricted(table, subset, modalities))
    described = default.describe()
    return System(
        f"default:{tag}", f"default fusion, as shipped ({tag})", "default", subset, probabilities, present,
        parameters={k: described[k] for k in ("fusion", "weights", "temperature") if k in described},
    )


def _cross_fit_late(
    table: pd.DataFrame, labels: np.ndarray, fold: np.ndarray | None, subset: tuple[str, ...], priors: dict
) -> tuple[System, System | None]:
    """Late fusion with equal weights and no priors (plus a cross-fitted temperature), and late
    fusion learned by stacking on the prior-relative evidence (None without folds)."""
    equal = LateFusion(weights={m: 1.0 for m in subset})
    equal_probs, present = equal.fuse(table)
    scaled = np.full_like(equal_probs, np.nan)
    learned, learned_raw = np.full_like(equal_probs, np.nan), np.full_like(equal_probs, np.nan)
    temperatures, weights, learned_t = [], [], []
    k = 0 if fold is None else fold.max() + 1
    for f in range(k):
        train, test = fold != f, fold == f
        calibrated = fit_temperature(equal, table[train], list(labels[train]))
        temperatures.append(calibrated.temperature)
        scaled[test] = calibrated.fuse(table[test])[0]
        try:
            stacked = fit_late_fusion(
                table[train], list(labels[train]), modalities=subset, priors={m: p for m, p in priors.items() if m in subset},
                row_weights=balanced_row_weights(labels[train]),
            )
        except ValueError as e:  # nothing informative to stack in this fold's training part
            log.warning("late fusion of %s, fold %d: %s; the fold's items get no label from it", subset, f, e)
            weights.append({m: 0.0 for m in subset})
            learned_t.append(None)
            continue
        weights.append({m: stacked.weights[m] for m in subset})
        learned_t.append(stacked.temperature)
        learned[test] = stacked.fuse(table[test])[0]
        learned_raw[test] = dataclasses.replace(stacked, temperature=1.0).fuse(table[test])[0]
    tag = "+".join(subset)
    late_equal = System(
        f"late_equal:{tag}", f"late fusion, equal weights, the old default ({tag})", "late_equal", subset, equal_probs, present,
        uncalibrated=equal_probs, calibrated=scaled if k else None,
        parameters={"weights": {m: 1.0 for m in subset}, "temperature": 1.0, "calibrated_temperature_per_fold": temperatures},
    )
    if not k:
        return late_equal, None
    mean_weights = {m: float(np.mean([w[m] for w in weights])) for m in subset}
    late_learned = System(
        f"late_learned:{tag}", f"late fusion, learned here ({tag})", "late_learned", subset, learned,
        ~np.isnan(learned).any(axis=1),  # a modality stacked to weight 0 gives no label on its own
        uncalibrated=learned_raw,
        parameters={"weights_per_fold": weights, "weights_mean": mean_weights, "temperature_per_fold": learned_t,
                    "priors": {m: list(p) for m, p in priors.items() if m in subset}},
    )
    return late_equal, late_learned


def _cross_fit_attention(
    table: pd.DataFrame, labels: np.ndarray, fold: np.ndarray, modalities: tuple[str, ...], *, seed: int, options
) -> dict[tuple[str, ...], System]:
    """Attention fusion trained per fold on all ``modalities`` (early stopping and temperature on a
    fifth of the training groups), measured on the held-out fold with all of them and with each
    subset of two or more."""
    from ..fusion import fit_attention_fusion

    k = fold.max() + 1
    subsets = _subsets(modalities)
    probs = {s: np.full((len(table), len(EMOTIONS)), np.nan) for s in subsets}
    raw = {s: np.full((len(table), len(EMOTIONS)), np.nan) for s in subsets}
    details = []
    groups = table["group"].to_numpy(dtype=object)
    for f in range(k):
        test = fold == f
        train, val = validation_split(groups, ~test, seed=seed + f)
        fusion = fit_attention_fusion(
            table[train], list(labels[train]), validation=(table[val], list(labels[val])),
            modalities=modalities, options=options, seed=seed + f,
        )
        details.append({"temperature": fusion.temperature, **fusion.config["training"]})
        for s in subsets:
            held_out = _restricted(table[test], s, modalities)
            logits, present = fusion.logits(held_out)
            probs[s][test] = fusion.fuse(held_out)[0]
            unscaled = np.full_like(logits, np.nan)
            unscaled[present] = softmax(logits[present] * fusion.temperature)  # before temperature scaling
            raw[s][test] = unscaled
    out = {}
    for s in subsets:
        tag = "+".join(s)
        name = f"attention fusion ({tag})" if s == modalities else f"attention fusion, given only {tag}"
        present = ~np.isnan(probs[s]).any(axis=1)
        out[s] = System(f"attention:{tag}", name, "attention", s, probs[s], present, uncalibrated=raw[s],
                         parameters={"trained_on": list(modalities), "per_fold": details})
    return out


def _attention_options(options, predictions: Predictions):
    """The attention settings; the voice embedding is left out when several voice heads made it
    (cross-fitted heads: each head's hidden layer is a space of its own)."""
    from ..fusion import AttentionOptions

    n_heads = len(predictions.model_ids.get("audio", {}).get("voice", {}))
    if options is None:
        options = AttentionOptions()
        if n_heads > 1:
            log.info("%d voice heads made the audio embeddings: attention fusion reads the voice's probabilities only", n_heads)
            options = dataclasses.replace(options, embeddings=tuple(m for m in options.embeddings if m != "audio"))
    elif n_heads > 1 and "audio" in options.embeddings:
        log.warning("attention fusion reads audio embeddings made by %d different voice heads: their spaces differ", n_heads)
    return options


def comparison_systems(
    predictions: Predictions, fold: np.ndarray | None, *, fusions: Sequence[str], seed: int, attention_options=None
) -> tuple[list[System], list[str]]:
    """Every system of the comparison, with out-of-fold probabilities for every item.

    Args:
        predictions: from :func:`~multimodal_ser.evaluation.predict.predict_manifest`.
        fold: shape ``(n,)`` each item's group fold, or None (one group: nothing learned is scored).
        fusions: a subset of :data:`FUSION_SYSTEMS`.
        seed: attention training.
        attention_options: see :func:`~multimodal_ser.evaluation.compare.compare_predictions`.

    Returns:
        ``(systems, notes)``: each modality alone, then per set of modalities its fusions; and what
        could not be scored, for the report.
    """
    table = predictions.table
    modalities = predictions.modalities
    labels = table["label"].to_numpy(dtype=object)
    n_groups = len(set(table["group"]))
    systems: list[System] = []
    for m in modalities:
        probabilities, present = modality_probabilities(table, m)
        systems.append(System(m, f"{m} alone", "modality", (m,), np.where(present[:, None], probabilities, np.nan), present))
    notes = []
    attention = {}
    if "attention" in fusions and len(modalities) >= 2:
        if n_groups >= MIN_GROUPS_ATTENTION:
            options = _attention_options(attention_options, predictions)
            attention = _cross_fit_attention(table, labels, fold, modalities, seed=seed, options=options)
        else:
            notes.append(f"attention fusion is not scored: it needs at least {MIN_GROUPS_ATTENTION} groups, found {n_groups}")
    default = _packaged_default(fusions)
    priors = _priors(default) if "late_learned" in fusions else {}
    for subset in _subsets(modalities):
        if default is not None:
            systems.append(_as_shipped(default, table, subset, modalities))
        if {"late_equal", "late_learned"} & set(fusions):
            equal, learned = _cross_fit_late(table, labels, fold, subset, priors)
            if "late_equal" in fusions:
                systems.append(equal)
            if "late_learned" in fusions and learned is not None:
                systems.append(learned)
        if subset in attention:
            systems.append(attention[subset])
    return systems, notes
