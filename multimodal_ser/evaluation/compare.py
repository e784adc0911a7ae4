"""Stage 2 of ``mser evaluate``: each modality, each set of modalities and each fusion compared
on held-out predictions.

:func:`compare_predictions` scores every system of
:func:`~multimodal_ser.evaluation.systems.comparison_systems` (each modality alone; for every set of
two or more modalities, the packaged default fusion as shipped, late fusion with equal weights,
late fusion learned by stacking and attention fusion). Whatever is learned is learned on some
groups and measured on others: group k-fold cross-fitting
(:func:`~multimodal_ser.evaluation.splits.group_folds`; with fewer groups than folds,
leave-one-group-out; with one group nothing learned is scored, see
:func:`~multimodal_ser.evaluation.splits.plan_folds`) gives an out-of-fold prediction for every
item, and no group is ever on both sides. Every system is scored on the items where it gives a
label (``n``; ``coverage`` = n / items): ``ua``, ``wa``, ``macro_f1`` with bootstrap 95% intervals
(whole groups resampled when the manifest has groups), confusion matrix and expected calibration
error; the same per ``group`` value when asked. :func:`evaluate_predictions` also writes the
report (:func:`~multimodal_ser.evaluation.report.write_report`).
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from collections.abc import Sequence
from typing import TypedDict

import numpy as np

from .. import __version__
from ..errors import MserError
from ..fusion import modality_probabilities
from ..labels import EMOTIONS
from ..validate import valid_int
from . import metrics as M
from .predict import Predictions
from .report import write_report
from .splits import group_folds, plan_folds
from .systems import FUSION_SYSTEMS, System, comparison_systems

log = logging.getLogger(__name__)


class SystemScores(TypedDict, total=False):
    """The scores of one system (one entry of :attr:`Comparison.systems`; keys as in ``metrics.json``)."""

    name: str
    kind: str
    """``modality``, ``default``, ``late_equal``, ``late_learned`` or ``attention``."""
    modalities: list[str]
    n: int
    """items the system gives a label to."""
    coverage: float
    """n / items."""
    labels: list[str]
    ua: float
    ua_ci: list[float]
    wa: float
    wa_ci: list[float]
    macro_f1: float
    macro_f1_ci: list[float]
    recall: dict[str, float | None]
    confusion: list[list[int]]
    ece: float
    ece_uncalibrated: float
    ece_temperature_scaled: float
    parameters: dict


class Comparison(TypedDict, total=False):
    """What :func:`compare_predictions` returns: the content of ``metrics.json`` (a plain dict at run time)."""

    labels: list[str]
    modalities: list[str]
    n_items: int
    n_failed: int
    failures: list[dict]
    warnings: list[str]
    folds: int | None
    folds_requested: int
    notes: list[str]
    seed: int
    bootstrap: int
    bootstrap_unit: str
    """``group`` or ``item``: what the bootstrap resamples."""
    n_groups: int
    fold_sizes: list[int]
    models: dict
    package_version: str
    created: str
    systems: dict[str, SystemScores]
    gains: dict[str, dict]
    """``{key: {"reference", "n", "ua_difference", "ua_difference_ci"}}``."""
    text_sources: dict[str, int]
    by_group: dict[str, dict[str, SystemScores]]
    by_presence: dict[str, dict]
    """``{pattern: {"n_items": int, "systems": {key: SystemScores}}}``."""
    probabilities: dict[str, np.ndarray]
    """only with ``return_probabilities``; never written."""
    manifest: dict
    """added by :func:`~multimodal_ser.evaluation.evaluate.evaluate_manifest`."""
    runtime_s: float


def _score(system: System, labels: np.ndarray, groups: np.ndarray | None, *, bootstrap: int, seed: int) -> SystemScores:
    rows = system.present
    n = int(rows.sum())
    out: SystemScores = {
        "name": system.name, "kind": system.kind, "modalities": list(system.modalities), "n": n, "coverage": n / len(labels)
    }
    if n == 0:
        return out
    probabilities = system.probabilities[rows]
    predicted = [EMOTIONS[i] for i in probabilities.argmax(axis=1)]
    out.update(
        M.summary(
            list(labels[rows]), predicted, labels=EMOTIONS, probabilities=probabilities,
            groups=None if groups is None else groups[rows], n_resamples=bootstrap, seed=seed,
        )
    )
    if system.uncalibrated is not None:
        out["ece_uncalibrated"] = M.expected_calibration_error(system.uncalibrated[rows], list(labels[rows]), labels=EMOTIONS)
    if system.calibrated is not None:
        out["ece_temperature_scaled"] = M.expected_calibration_error(system.calibrated[rows], list(labels[rows]), labels=EMOTIONS)
    if system.parameters:
        out["parameters"] = system.parameters
    return out


def _gains_over_best_alone(
    systems: Sequence[System], scores: dict, labels: np.ndarray, groups: np.ndarray | None, *, bootstrap: int, seed: int
) -> dict:
    """For each system of two or more modalities: its UA minus the UA of the best of its modalities
    alone (the highest UA over all items), on the items both label, with a paired bootstrap interval.

    Returns:
        ``{system key: {"reference": name, "n", "ua_difference", "ua_difference_ci": [low, high]}}``.
    """
    alone = {s.modalities[0]: s for s in systems if s.kind == "modality" and "ua" in scores[s.key]}
    names = np.asarray(EMOTIONS, dtype=object)
    out = {}
    for system in systems:
        candidates = [m for m in system.modalities if m in alone]
        if len(system.modalities) < 2 or not candidates:
            continue
        reference = alone[max(candidates, key=lambda m: scores[alone[m].key]["ua"])]
        rows = system.present & reference.present
        if not rows.any():
            continue
        difference, interval = M.paired_difference(
            labels[rows], names[system.probabilities[rows].argmax(axis=1)], names[reference.probabilities[rows].argmax(axis=1)],
            labels=EMOTIONS, groups=None if groups is None else groups[rows], n_resamples=bootstrap, seed=seed,
        )
        out[system.key] = {
            "reference": reference.name, "n": int(rows.sum()), "ua_difference": difference, "ua_difference_ci": list(interval)
        }
    return out


def evaluate_predictions(predictions: Predictions, out_dir: str | os.PathLike, **options) -> Comparison:
    """:func:`compare_predictions` (same keyword options), written into ``out_dir`` as
    ``metrics.json``, ``metrics.md`` and ``comparison.png`` (see :func:`write_report`)."""
    result = compare_predictions(predictions, **options)
    write_report(result, out_dir)
    return result


def compare_predictions(
    predictions: Predictions,
    *,
    folds: int = 5,
    seed: int = 0,
    by_group: bool = False,
    by_presence: bool = False,
    bootstrap: int = 1000,
    fusions: Sequence[str] = FUSION_SYSTEMS,
    attention_options=None,
    return_probabilities: bool = False,
) -> Comparison:
    """Compare each modality, each set of modalities and each fusion on cross-fitted predictions.

    Args:
        predictions: from :func:`predict_manifest`.
        folds: group k-fold folds for everything learned (>= 2); with fewer groups, leave-one-group-out,
            and with a single group nothing learned is scored (see :func:`plan_folds`).
        seed: fold assignment, attention training and the bootstrap.
        by_group: also score every system on each ``group`` value.
        by_presence: also score every system on the items of each presence pattern (which of the
            modalities the item has, e.g. ``audio+text`` or ``face``), for data that mixes sources.
        bootstrap: bootstrap resamples for the 95% intervals (>= 1).
        fusions: which fusions to score, a subset of :data:`FUSION_SYSTEMS`: ``default`` (the packaged
            default as shipped), ``late_equal`` (equal weights, no priors: the old default),
            ``late_learned`` (stacked on the other folds), ``attention`` (trained on the other folds).
        attention_options: :class:`~multimodal_ser.fusion.AttentionOptions` for the
            attention fusion trained in each fold (None: the defaults, without the voice
            embedding when several voice heads made it).
        return_probabilities: also return every system's out-of-fold probabilities ``(n, 7)``
            under ``probabilities`` (``{key: array}``; not written by :func:`write_report`).

    Returns:
        :class:`Comparison`, the content of ``metrics.json``: ``labels``, ``modalities``, ``n_items``, ``n_failed``,
        ``failures``, ``folds``, ``seed``, ``bootstrap``, ``n_groups``, ``fold_sizes``, ``models``,
        ``systems`` (``{key: {name, kind, modalities, n, coverage, ua, ua_ci, wa, wa_ci, macro_f1,
        macro_f1_ci, recall, confusion, ece, ...}}`` with keys like ``audio``,
        ``default:audio+text``, ``late_equal:audio+text``, ``late_learned:audio+text``, ``attention:audio+text``),
        ``gains`` (each multi-modality system's UA over its best single modality, see
        :func:`_gains_over_best_alone`),
        ``by_group`` (``{group: {key: metrics}}``) and ``by_presence``
        (``{pattern: {"n_items": int, "systems": {key: metrics}}}``) when asked, and ``runtime_s``.
    """
    folds = valid_int("folds", folds, 2)
    bootstrap = valid_int("bootstrap", bootstrap, 1)
    unknown = set(fusions) - set(FUSION_SYSTEMS)
    if unknown:
        raise ValueError(f"fusions must be among {', '.join(FUSION_SYSTEMS)}, not {sorted(unknown)}")
    began = time.monotonic()
    table = predictions.table
    if table.empty:
        raise MserError("no item could be predicted; nothing to evaluate")
    modalities = predictions.modalities
    labels = table["label"].to_numpy(dtype=object)
    group_values = table["group"].to_numpy(dtype=object)
    own_groups = all(str(g).startswith("item-") for g in group_values)
    if own_groups:
        log.warning("the manifest has no group column: every item is its own group, so splits cannot keep speakers apart")
    n_groups = len(set(group_values))
    used_folds, folds_note = plan_folds(n_groups, folds)
    if folds_note:
        log.warning("%s", folds_note)
    fold = None if used_folds is None else group_folds(group_values, folds=used_folds, seed=seed)
    systems, system_notes = comparison_systems(
        predictions, fold, fusions=fusions, seed=seed, attention_options=attention_options
    )
    notes = ([folds_note] if folds_note else []) + system_notes
    bootstrap_groups = None if own_groups else group_values
    result: Comparison = {
        "labels": list(EMOTIONS),
        "modalities": list(modalities),
        "n_items": len(table),
        "n_failed": len(predictions.failures),
        "failures": predictions.failures,
        "warnings": list(predictions.warnings),
        "folds": used_folds,
        "folds_requested": folds,
        "notes": notes,
        "seed": seed,
        "bootstrap": bootstrap,
        "bootstrap_unit": "item" if own_groups else "group",
        "n_groups": int(len(set(group_values))),
        "fold_sizes": [] if fold is None else np.bincount(fold, minlength=used_folds).tolist(),
        "models": predictions.model_ids,
        "package_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "systems": {s.key: _score(s, labels, bootstrap_groups, bootstrap=bootstrap, seed=seed) for s in systems},
    }
    result["gains"] = _gains_over_best_alone(systems, result["systems"], labels, bootstrap_groups, bootstrap=bootstrap, seed=seed)
    text_sources = table["text_source"].value_counts(dropna=True).to_dict() if "text" in modalities else {}
    if text_sources:
        result["text_sources"] = {str(k): int(v) for k, v in text_sources.items()}
    if by_group:
        result["by_group"] = {}
        for g in sorted(set(group_values)):
            inside = group_values == g
            result["by_group"][str(g)] = {
                s.key: _score(s.subset(inside), labels[inside], None, bootstrap=bootstrap, seed=seed) for s in systems
            }
    if by_presence:
        masks = np.stack([modality_probabilities(table, m)[1] for m in modalities], axis=1)
        patterns = np.array(["+".join(m for m, p in zip(modalities, row) if p) or "none" for row in masks], dtype=object)
        result["by_presence"] = {}
        for pattern in sorted(set(patterns)):
            inside = patterns == pattern
            rows_groups = None if own_groups else group_values[inside]
            result["by_presence"][pattern] = {
                "n_items": int(inside.sum()),
                "systems": {
                    s.key: _score(s.subset(inside), labels[inside], rows_groups, bootstrap=bootstrap, seed=seed)
                    for s in systems
                },
            }
    if return_probabilities:
        result["probabilities"] = {s.key: s.probabilities for s in systems}
    result["runtime_s"] = round(time.monotonic() - began, 1)
    return result
