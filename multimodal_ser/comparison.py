"""Stage 2 of ``mser evaluate``: each modality, each set of modalities and each fusion compared
on held-out predictions, and the report.

:func:`compare_predictions` scores each modality alone and, for every set of two or more
modalities, the packaged default fusion as shipped, late fusion with equal weights (the old
default), late fusion learned by stacking and attention fusion. Whatever is learned is learned on
some groups and measured on others: group k-fold cross-fitting (:func:`group_folds`; with fewer
groups than folds, leave-one-group-out; with one group nothing learned is scored, see
:func:`plan_folds`) gives an out-of-fold prediction for every item, and no group is ever on both
sides. Every system is scored on the items where it gives a label (``n``; ``coverage`` = n /
items): ``ua``, ``wa``, ``macro_f1`` with bootstrap 95% intervals (whole groups resampled when the
manifest has groups), confusion matrix and expected calibration error; the same per ``group``
value when asked. :func:`write_report` writes ``metrics.json``, ``metrics.md`` and ``comparison.png``.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .evaluation import metrics as M
from .errors import ModelError, MserError
from .files import atomic_output
from .fusion import LateFusion, balanced_row_weights, fit_late_fusion, fit_temperature, modality_probabilities
from .labels import EMOTIONS

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Predictions:
    """Every branch's output for the items of a manifest."""

    table: pd.DataFrame
    """one row per manifest row that did not fail: ``path``, ``start``, ``end`` (seconds; NaN = the
    whole file), ``label``, ``group`` (str; the item's own index when the manifest has none),
    ``text`` (what the text branch read), ``text_source`` (``manifest``, ``asr`` or None), the
    manifest's other columns (``source``, ``actor``, ...), and for each requested modality the
    columns of :func:`multimodal_ser.grid.modality_table`."""
    failures: list[dict]
    """``{"path", "line", "reason"}`` of each item that failed."""
    modalities: tuple[str, ...]
    model_ids: dict
    warnings: tuple[str, ...] = ()
    """what makes some scores untrustworthy (for example a head scored on its own training speakers)."""


def _valid_positive_int(name: str, value, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, not {value!r}")
    return int(value)




def group_folds(groups: Sequence, *, folds: int, seed: int = 0) -> np.ndarray:
    """Assign whole groups to ``folds`` folds of similar size.

    Groups are shuffled with ``seed``, then taken largest first (stable) and each put in the fold
    with the fewest items so far.

    Args:
        groups: the group (speaker) of each item, shape ``(n,)``.
        folds: number of folds, >= 2 and at most the number of distinct groups.

    Returns:
        shape ``(n,)`` int: each item's fold in ``0..folds-1``; items of a group share a fold.

    Raises:
        ValueError: fewer distinct groups than folds.
    """
    folds = _valid_positive_int("folds", folds, 2)
    groups = np.asarray([str(g) for g in groups], dtype=object)
    names, counts = np.unique(groups, return_counts=True)
    if len(names) < folds:
        raise ValueError(f"{folds} folds need at least {folds} distinct groups, found {len(names)}")
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(names))
    ordered = shuffled[np.argsort(-counts[shuffled], kind="stable")]
    sizes = np.zeros(folds, dtype=np.int64)
    fold_of = {}
    for g in ordered:
        f = int(np.argmin(sizes))
        fold_of[names[g]] = f
        sizes[f] += counts[g]
    return np.array([fold_of[g] for g in groups], dtype=np.int64)


def plan_folds(n_groups: int, folds: int) -> tuple[int | None, str | None]:
    """How many group folds the learned fusions can use with ``n_groups`` groups.

    Returns:
        ``(folds to use, note)``: ``folds`` when there are enough groups; ``n_groups``
        (leave-one-group-out) when there are fewer; None when there is a single group (nothing can
        be learned on some speakers and measured on others; single branches and the shipped default
        are still scored). The note says which, for the report; None when nothing changed.
    """
    folds = _valid_positive_int("folds", folds, 2)
    if n_groups < 2:
        return None, (
            f"{n_groups} group: learned fusions need speakers to learn on and others to be measured on, so they are "
            "not scored; each branch alone and the fusions as shipped are"
        )
    if n_groups < folds:
        return n_groups, f"{n_groups} groups < {folds} folds: leave-one-group-out ({n_groups} folds)"
    return folds, None


MIN_GROUPS_ATTENTION = 3
"""Attention fusion trains on some groups, stops early on another and is measured on a third."""


FUSION_SYSTEMS = ("default", "late_equal", "late_learned", "attention")
"""The fusions :func:`compare_predictions` can score."""


@dataclasses.dataclass
class _System:
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
    from .fusion import load_fusion

    try:
        return load_fusion("default")
    except ModelError as e:
        log.warning("the packaged default fusion is not scored: %s", e)
        return None


def _priors(default) -> dict:
    """The branch priors the packaged late fusion reads evidence against (none for attention)."""
    if isinstance(default, LateFusion):
        return dict(default.priors)
    from .fusion import load_fusion

    try:
        late = load_fusion("late")
    except ModelError:
        return {}
    return dict(late.priors)


def _as_shipped(default, table: pd.DataFrame, subset: tuple[str, ...], modalities: tuple[str, ...]) -> _System:
    """The packaged default fusion applied as it ships (nothing fitted on this data), given only ``subset``."""
    tag = "+".join(subset)
    probabilities, present = default.fuse(_restricted(table, subset, modalities))
    described = default.describe()
    return _System(
        f"default:{tag}", f"default fusion, as shipped ({tag})", "default", subset, probabilities, present,
        parameters={k: described[k] for k in ("fusion", "weights", "temperature") if k in described},
    )


def _cross_fit_late(
    table: pd.DataFrame, labels: np.ndarray, fold: np.ndarray | None, subset: tuple[str, ...], priors: dict
) -> tuple[_System, _System | None]:
    """Late fusion with equal weights and no priors (plus a cross-fitted temperature), and late
    fusion learned by stacking on the prior-relative evidence (None without folds)."""
    n = len(table)
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
    late_equal = _System(
        f"late_equal:{tag}", f"late fusion, equal weights, the old default ({tag})", "late_equal", subset, equal_probs, present,
        uncalibrated=equal_probs, calibrated=scaled if k else None,
        parameters={"weights": {m: 1.0 for m in subset}, "temperature": 1.0, "calibrated_temperature_per_fold": temperatures},
    )
    if not k:
        return late_equal, None
    mean_weights = {m: float(np.mean([w[m] for w in weights])) for m in subset}
    late_learned = _System(
        f"late_learned:{tag}", f"late fusion, learned here ({tag})", "late_learned", subset, learned,
        ~np.isnan(learned).any(axis=1),  # a modality stacked to weight 0 gives no label on its own
        uncalibrated=learned_raw,
        parameters={"weights_per_fold": weights, "weights_mean": mean_weights, "temperature_per_fold": learned_t,
                    "priors": {m: list(p) for m, p in priors.items() if m in subset}},
    )
    return late_equal, late_learned


def _validation_split(groups: np.ndarray, rows: np.ndarray, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``rows`` (bool mask) by group into training (about 4/5) and validation (about 1/5) masks."""
    inside = np.flatnonzero(rows)
    parts = min(5, len(set(groups[inside])))
    if parts < 2:
        raise ValueError(f"attention fusion needs at least 2 groups to train on, found {parts}")
    held = group_folds(groups[inside], folds=parts, seed=seed) == 0
    train, val = np.zeros(len(groups), dtype=bool), np.zeros(len(groups), dtype=bool)
    train[inside[~held]], val[inside[held]] = True, True
    return train, val


def _cross_fit_attention(
    table: pd.DataFrame, labels: np.ndarray, fold: np.ndarray, modalities: tuple[str, ...], *, seed: int, options
) -> dict[tuple[str, ...], _System]:
    """Attention fusion trained per fold on all ``modalities`` (early stopping and temperature on a
    fifth of the training groups), measured on the held-out fold with all of them and with each
    subset of two or more."""
    from .attention_fusion import fit_attention_fusion

    k = fold.max() + 1
    subsets = _subsets(modalities)
    probs = {s: np.full((len(table), len(EMOTIONS)), np.nan) for s in subsets}
    raw = {s: np.full((len(table), len(EMOTIONS)), np.nan) for s in subsets}
    details = []
    groups = table["group"].to_numpy(dtype=object)
    for f in range(k):
        test = fold == f
        train, val = _validation_split(groups, ~test, seed=seed + f)
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
            z = logits[present] * fusion.temperature  # before temperature scaling
            z -= z.max(axis=1, keepdims=True)
            unscaled[present] = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
            raw[s][test] = unscaled
    out = {}
    for s in subsets:
        tag = "+".join(s)
        name = f"attention fusion ({tag})" if s == modalities else f"attention fusion, given only {tag}"
        present = ~np.isnan(probs[s]).any(axis=1)
        out[s] = _System(f"attention:{tag}", name, "attention", s, probs[s], present, uncalibrated=raw[s],
                         parameters={"trained_on": list(modalities), "per_fold": details})
    return out


def _score(system: _System, labels: np.ndarray, groups: np.ndarray | None, *, bootstrap: int, seed: int) -> dict:
    rows = system.present
    n = int(rows.sum())
    out: dict = {
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
    systems: Sequence[_System], scores: dict, labels: np.ndarray, groups: np.ndarray | None, *, bootstrap: int, seed: int
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


def evaluate_predictions(predictions: Predictions, out_dir: str | os.PathLike, **options) -> dict:
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
) -> dict:
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
        attention_options: :class:`~multimodal_ser.attention_fusion.AttentionOptions` for the
            attention fusion trained in each fold (None: the defaults, without the voice
            embedding when several voice heads made it).
        return_probabilities: also return every system's out-of-fold probabilities ``(n, 7)``
            under ``probabilities`` (``{key: array}``; not written by :func:`write_report`).

    Returns:
        The content of ``metrics.json``: ``labels``, ``modalities``, ``n_items``, ``n_failed``,
        ``failures``, ``folds``, ``seed``, ``bootstrap``, ``n_groups``, ``fold_sizes``, ``models``,
        ``systems`` (``{key: {name, kind, modalities, n, coverage, ua, ua_ci, wa, wa_ci, macro_f1,
        macro_f1_ci, recall, confusion, ece, ...}}`` with keys like ``audio``,
        ``default:audio+text``, ``late_equal:audio+text``, ``late_learned:audio+text``, ``attention:audio+text``),
        ``gains`` (each multi-modality system's UA over its best single modality, see
        :func:`_gains_over_best_alone`),
        ``by_group`` (``{group: {key: metrics}}``) and ``by_presence``
        (``{pattern: {"n_items": int, "systems": {key: metrics}}}``) when asked, and ``runtime_s``.
    """
    folds = _valid_positive_int("folds", folds, 2)
    bootstrap = _valid_positive_int("bootstrap", bootstrap)
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
    systems: list[_System] = []
    for m in modalities:
        probabilities, present = modality_probabilities(table, m)
        systems.append(_System(m, f"{m} alone", "modality", (m,), np.where(present[:, None], probabilities, np.nan), present))
    notes = [folds_note] if folds_note else []
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
    bootstrap_groups = None if own_groups else group_values
    result: dict = {
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
                s.key: _score(_subset_system(s, inside), labels[inside], None, bootstrap=bootstrap, seed=seed) for s in systems
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
                    s.key: _score(_subset_system(s, inside), labels[inside], rows_groups, bootstrap=bootstrap, seed=seed)
                    for s in systems
                },
            }
    if return_probabilities:
        result["probabilities"] = {s.key: s.probabilities for s in systems}
    result["runtime_s"] = round(time.monotonic() - began, 1)
    return result


def _attention_options(options, predictions: Predictions):
    """The attention settings; the voice embedding is left out when several voice heads made it
    (cross-fitted heads: each head's hidden layer is a space of its own)."""
    from .attention_fusion import AttentionOptions

    n_heads = len(predictions.model_ids.get("audio", {}).get("voice", {}))
    if options is None:
        options = AttentionOptions()
        if n_heads > 1:
            log.info("%d voice heads made the audio embeddings: attention fusion reads the voice's probabilities only", n_heads)
            options = dataclasses.replace(options, embeddings=tuple(m for m in options.embeddings if m != "audio"))
    elif n_heads > 1 and "audio" in options.embeddings:
        log.warning("attention fusion reads audio embeddings made by %d different voice heads: their spaces differ", n_heads)
    return options


def _subset_system(system: _System, rows: np.ndarray) -> _System:
    return dataclasses.replace(
        system,
        probabilities=system.probabilities[rows],
        present=system.present[rows],
        uncalibrated=None if system.uncalibrated is None else system.uncalibrated[rows],
        calibrated=None if system.calibrated is None else system.calibrated[rows],
        parameters={},
    )




def write_report(result: dict, out_dir: str | os.PathLike) -> Path:
    """Write ``metrics.json``, ``metrics.md`` and ``comparison.png`` of an evaluation into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output(out_dir / "metrics.json") as tmp:
        written = {k: v for k, v in result.items() if k != "probabilities"}
        tmp.write_text(json.dumps(written, indent=2, default=_json_default) + "\n")
    with atomic_output(out_dir / "metrics.md") as tmp:
        tmp.write_text(markdown_report(result))
    with atomic_output(out_dir / "comparison.png") as tmp:
        _plot(result, tmp)
    return out_dir


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


_TABLE_COLUMNS = ("n", "coverage", "ua", "ua_ci", "wa", "wa_ci", "macro_f1", "macro_f1_ci", "ece")


def markdown_report(result: dict) -> str:
    """The comparison as Markdown: the main table (one row per modality / fusion), fusion
    parameters, calibration, confusion matrices and, when present, per-group UA."""
    systems = result["systems"]
    lines = [
        "# Modality and fusion comparison",
        "",
        f"{result['n_items']} items ({result['n_failed']} failed and left out), {result['n_groups']} groups, "
        + (f"{result['folds']}-fold group cross-fitting (fold sizes {result['fold_sizes']})" if result.get("folds")
           else "no cross-fitting (one group)")
        + f", seed {result['seed']}; 95% intervals from {result['bootstrap']} bootstrap resamples of whole {result['bootstrap_unit']}s.",
        "Every learned fusion is fitted on other groups than the ones it is scored on; the default fusion is scored as "
        "shipped (its card says what it was learned on). `n` = items the system gives a label to; `coverage` = n / items.",
        "",
    ]
    lines += [f"**Note:** {note}" for note in result.get("notes", [])] + ([""] if result.get("notes") else [])
    lines += [f"**Warning:** {w}" for w in result.get("warnings", [])] + ([""] if result.get("warnings") else [])
    if result.get("manifest"):
        lines += [f"Manifest: `{result['manifest'].get('path', result['manifest'].get('source'))}`", ""]
    if result.get("text_sources"):
        lines += [f"Text read from: {result['text_sources']}", ""]
    rows = {v["name"]: v for v in systems.values()}
    lines += [M.markdown_table(rows, columns=list(_TABLE_COLUMNS), index_name="system"), ""]
    if result.get("gains"):
        lines += [
            "## What fusion adds: UA minus the UA of the best of its modalities alone",
            "",
            "On the items both label; 95% interval from resampling both systems together (paired bootstrap).",
            "",
            M.markdown_table(
                {
                    systems[key]["name"]: {"best alone": g["reference"], "n": g["n"], "UA difference": g["ua_difference"],
                                           "95% CI": g["ua_difference_ci"]}
                    for key, g in result["gains"].items()
                },
                columns=["best alone", "n", "UA difference", "95% CI"],
                index_name="system",
            ),
            "",
        ]
    learned = {k: v for k, v in systems.items() if v["kind"] == "late_learned" and "parameters" in v}
    if learned:
        lines += ["## Learned late-fusion weights (mean over folds; the most reliable modality has weight 1)", ""]
        table = {
            v["name"]: {
                **{m: v["parameters"]["weights_mean"][m] for m in v["modalities"]},
                "T (mean)": float(np.mean([t for t in v["parameters"]["temperature_per_fold"] if t is not None])),
            }
            for v in learned.values()
        }
        lines += [M.markdown_table(table, columns=[*result["modalities"], "T (mean)"], index_name="system"), ""]
    calibration = {
        v["name"]: {"ECE before": v.get("ece_uncalibrated"), "ECE after": v.get("ece_temperature_scaled", v.get("ece"))}
        for v in systems.values()
        if "ece_uncalibrated" in v
    }
    if calibration:
        lines += [
            "## Calibration (expected calibration error, 15 bins)",
            "",
            "Before: T = 1. After: the temperature fitted on the training folds (for equal weights, "
            "temperature scaling with the weights kept at 1.0).",
            "",
            M.markdown_table(calibration, columns=["ECE before", "ECE after"], index_name="system"),
            "",
        ]
    lines += ["## Confusion matrices (rows = truth)", ""]
    for v in systems.values():
        if "confusion" in v:
            lines += [f"### {v['name']}", "", M.markdown_confusion(v["confusion"], labels=result["labels"]), ""]
    if result.get("by_group"):
        lines += ["## Unweighted accuracy per group", ""]
        keys = list(systems)
        table = {g: {systems[k]["name"]: metrics.get(k, {}).get("ua") for k in keys} for g, metrics in result["by_group"].items()}
        lines += [M.markdown_table(table, columns=[systems[k]["name"] for k in keys], index_name="group"), ""]
    if result.get("by_presence"):
        lines += ["## Unweighted accuracy per presence pattern (which modalities the items have)", ""]
        keys = list(systems)
        table = {
            f"{p} (n={part['n_items']})": {systems[k]["name"]: part["systems"][k].get("ua") for k in keys}
            for p, part in result["by_presence"].items()
        }
        lines += [M.markdown_table(table, columns=[systems[k]["name"] for k in keys], index_name="items with"), ""]
    if result.get("failures"):
        lines += ["## Failed items", ""]
        lines += [f"- `{f['path']}` (line {f['line']}): {f['reason']}" for f in result["failures"]] + [""]
    return "\n".join(lines)


def _plot(result: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: the Agg canvas, no global state

    scored = [v for v in result["systems"].values() if "ua" in v]
    names = [v["name"] for v in scored]
    figure = Figure(figsize=(9, 0.45 * len(scored) + 1.6))
    axes = figure.add_subplot()
    y = np.arange(len(scored))
    height = 0.38
    for shift, metric, colour in ((-height / 2, "ua", "tab:blue"), (height / 2, "macro_f1", "tab:orange")):
        values = np.array([v[metric] for v in scored])
        low = values - np.array([v[f"{metric}_ci"][0] for v in scored])
        high = np.array([v[f"{metric}_ci"][1] for v in scored]) - values
        axes.barh(y + shift, values, height, xerr=[np.maximum(low, 0), np.maximum(high, 0)], color=colour,
                  capsize=3, label={"ua": "unweighted accuracy", "macro_f1": "macro-F1"}[metric])
    axes.set_yticks(y, names)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    folds = f"{result['folds']}-fold group cross-fitting" if result.get("folds") else "one group, nothing learned"
    axes.set_xlabel(f"score (95% bootstrap interval), {result['n_items']} items, {folds}")
    axes.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    with open(path, "wb") as f:
        figure.savefig(f, format="png", dpi=110)
