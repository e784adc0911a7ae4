"""Classification metrics shared by every evaluation: UA, WA, macro-F1, confusion, intervals, calibration.

Labels are always passed explicitly (``labels=``), in the order that rows and columns of a confusion
matrix and columns of a probability matrix follow; predictions and truths are sequences of those
label names. Pure numpy (plus scikit-learn's F1), deterministic given a seed.

- ``ua`` (unweighted accuracy, a.k.a. balanced accuracy): the mean over classes of per-class recall,
  over the classes that occur in the truth. The number speech-emotion papers report, since it does
  not reward predicting the majority class.
- ``wa`` (weighted accuracy): plain accuracy, the fraction of items predicted right.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
from sklearn.metrics import f1_score


def _indices(values: Sequence, labels: Sequence[str], what: str) -> np.ndarray:
    position = {label: i for i, label in enumerate(labels)}
    if len(position) != len(labels):
        raise ValueError(f"labels must be distinct, got {list(labels)}")
    out = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        if value not in position:
            raise ValueError(f"{what}[{i}] is {value!r}, expected one of {list(labels)}")
        out[i] = position[value]
    return out


def _pair(y_true: Sequence, y_pred: Sequence, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true and y_pred must have the same length, not {len(y_true)} and {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError("no items to score (empty y_true)")
    return _indices(y_true, labels, "y_true"), _indices(y_pred, labels, "y_pred")


def confusion(y_true: Sequence, y_pred: Sequence, *, labels: Sequence[str]) -> np.ndarray:
    """Counts, shape ``(k, k)`` int: row = true label, column = predicted label, in ``labels`` order."""
    t, p = _pair(y_true, y_pred, labels)
    k = len(labels)
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def recalls(y_true: Sequence, y_pred: Sequence, *, labels: Sequence[str]) -> np.ndarray:
    """Per-class recall, shape ``(k,)``; NaN for a class absent from ``y_true``."""
    counts = confusion(y_true, y_pred, labels=labels)
    support = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(counts) / support, np.nan)


def ua(y_true: Sequence, y_pred: Sequence, *, labels: Sequence[str]) -> float:
    """Unweighted accuracy: the mean per-class recall over the classes present in ``y_true``."""
    return float(np.nanmean(recalls(y_true, y_pred, labels=labels)))


def wa(y_true: Sequence, y_pred: Sequence, *, labels: Sequence[str]) -> float:
    """Weighted accuracy: the fraction of items whose prediction equals the truth."""
    t, p = _pair(y_true, y_pred, labels)
    return float(np.mean(t == p))


def macro_f1(y_true: Sequence, y_pred: Sequence, *, labels: Sequence[str]) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``y_true`` or ``y_pred`` (0 where undefined)."""
    t, p = _pair(y_true, y_pred, labels)
    present = np.union1d(t, p)
    return float(f1_score(t, p, labels=present, average="macro", zero_division=0))


def bootstrap_interval(
    y_true: Sequence,
    y_pred: Sequence,
    metric: Callable[..., float],
    *,
    labels: Sequence[str],
    groups: Sequence | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``metric(y_true, y_pred, labels=labels)``.

    Args:
        metric: :func:`ua`, :func:`wa`, :func:`macro_f1` or any function with that signature.
        groups: when given (speaker or actor ids), whole groups are resampled (a cluster bootstrap),
            which is the honest interval when items of one speaker are not independent.
        n_resamples: bootstrap replicates.
        confidence: coverage of the interval, in (0, 1).

    Returns:
        ``(low, high)``.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, not {n_resamples}")
    y_true, y_pred = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    _pair(y_true, y_pred, labels)
    rng = np.random.default_rng(seed)
    if groups is None:
        members = [np.array([i]) for i in range(len(y_true))]
    else:
        groups = np.asarray(groups)
        if len(groups) != len(y_true):
            raise ValueError(f"groups must have one entry per item ({len(y_true)}), not {len(groups)}")
        members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    values = np.empty(n_resamples)
    for b in range(n_resamples):
        chosen = np.concatenate([members[i] for i in rng.integers(len(members), size=len(members))])
        values[b] = metric(y_true[chosen], y_pred[chosen], labels=labels)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def expected_calibration_error(
    probabilities: np.ndarray, y_true: Sequence, *, labels: Sequence[str], n_bins: int = 15
) -> float:
    """Expected calibration error of the top-class confidence (equal-width bins on [0, 1]).

    Args:
        probabilities: shape ``(n, k)``, columns in ``labels`` order, rows summing to 1.
        y_true: ``n`` true labels.

    Returns:
        ``sum over bins of (items in bin / n) * |accuracy in bin - mean confidence in bin|``, in [0, 1].
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or probabilities.shape != (len(y_true), len(labels)):
        raise ValueError(f"probabilities must have shape ({len(y_true)}, {len(labels)}), not {probabilities.shape}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, not {n_bins}")
    t = _indices(y_true, labels, "y_true")
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == t
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        inside = bins == b
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(ece)


def summary(
    y_true: Sequence,
    y_pred: Sequence,
    *,
    labels: Sequence[str],
    probabilities: np.ndarray | None = None,
    groups: Sequence | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """Every metric of one evaluation, JSON-ready.

    Returns:
        ``n``, ``ua``, ``wa``, ``macro_f1`` and their bootstrap 95% intervals ``ua_ci``, ``wa_ci``,
        ``macro_f1_ci`` (resampling ``groups`` when given), ``recall`` per label (None where the
        label is absent), ``labels``, ``confusion`` (nested lists, rows = truth) and, with
        ``probabilities``, ``ece``.
    """
    out: dict = {"n": len(y_true), "labels": list(labels)}
    for name, metric in (("ua", ua), ("wa", wa), ("macro_f1", macro_f1)):
        out[name] = metric(y_true, y_pred, labels=labels)
        out[f"{name}_ci"] = list(
            bootstrap_interval(y_true, y_pred, metric, labels=labels, groups=groups, n_resamples=n_resamples, seed=seed)
        )
    per_class = recalls(y_true, y_pred, labels=labels)
    out["recall"] = {label: (None if np.isnan(r) else float(r)) for label, r in zip(labels, per_class, strict=True)}
    out["confusion"] = confusion(y_true, y_pred, labels=labels).tolist()
    if probabilities is not None:
        out["ece"] = expected_calibration_error(probabilities, y_true, labels=labels)
    return out


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else f"{value:.3f}"
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, (float, np.floating)) for v in value):
        return f"[{value[0]:.3f}, {value[1]:.3f}]"
    return str(value)


def markdown_table(rows: Mapping[str, Mapping[str, object]], *, columns: Sequence[str], index_name: str = "") -> str:
    """A Markdown table: one row per ``rows`` key, one column per name in ``columns``.

    Floats print with 3 decimals, pairs of floats as ``[low, high]``, missing cells empty.
    """
    lines = [
        "| " + " | ".join([index_name] + list(columns)) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for name, row in rows.items():
        lines.append("| " + " | ".join([str(name)] + [_cell(row.get(c)) for c in columns]) + " |")
    return "\n".join(lines)


def markdown_confusion(counts: np.ndarray | Sequence[Sequence[int]], *, labels: Sequence[str]) -> str:
    """A confusion matrix as a Markdown table: rows = true label, columns = predicted label."""
    counts = np.asarray(counts)
    if counts.shape != (len(labels), len(labels)):
        raise ValueError(f"counts must have shape ({len(labels)}, {len(labels)}), not {counts.shape}")
    rows = {f"**{t}**": {p: str(int(counts[i, j])) for j, p in enumerate(labels)} for i, t in enumerate(labels)}
    return markdown_table(rows, columns=list(labels), index_name="true \\ predicted")
