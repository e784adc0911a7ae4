"""Classification metrics shared by every evaluation: UA, WA, macro-F1, confusion, intervals, calibration.

Labels are always passed explicitly (``labels=``), in the order that rows and columns of a confusion
matrix and columns of a probability matrix follow; predictions and truths are sequences of those
label names. Pure numpy, deterministic given a seed.

- ``ua`` (unweighted accuracy, a.k.a. balanced accuracy): the mean over classes of per-class recall,
  over the classes that occur in the truth. The number speech-emotion papers report, since it does
  not reward predicting the majority class.
- ``wa`` (weighted accuracy): plain accuracy, the fraction of items predicted right.
- ``weighted_f1``: per-class F1 weighted by the classes' shares of the truth.
- ``paired_difference``: how much one system's UA (or another metric) exceeds another's on the
  same items, with an interval from resampling both together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np


def _indices(values: Sequence, labels: Sequence[str], what: str) -> np.ndarray:
    labels = list(labels)
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct, got {labels}")
    values = np.asarray(values, dtype=object).reshape(-1)
    order = np.argsort(np.asarray(labels, dtype=object))
    sorted_labels = np.asarray(labels, dtype=object)[order]
    try:
        found = np.searchsorted(sorted_labels, values)
    except TypeError:  # mixed types cannot be ordered: find the offender the slow way
        found = np.zeros(len(values), dtype=np.int64)
    found = np.minimum(found, len(labels) - 1)
    bad = sorted_labels[found] != values
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what}[{i}] is {values[i]!r}, expected one of {labels}")
    return order[found].astype(np.int64)


def _pair(y_true: Sequence, y_pred: Sequence, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true and y_pred must have the same length, not {len(y_true)} and {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError("no items to score (empty y_true)")
    return _indices(y_true, labels, "y_true"), _indices(y_pred, labels, "y_pred")


# Metrics on class-index arrays (t, p: int arrays, k classes); the public functions validate and convert.


def _confusion(t: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def _recalls(t: np.ndarray, p: np.ndarray, k: int) -> np.ndarray:
    counts = _confusion(t, p, k)
    support = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(counts) / support, np.nan)


def _ua(t: np.ndarray, p: np.ndarray, k: int) -> float:
    return float(np.nanmean(_recalls(t, p, k)))


def _wa(t: np.ndarray, p: np.ndarray, k: int) -> float:
    return float(np.mean(t == p))


def _macro_f1(t: np.ndarray, p: np.ndarray, k: int) -> float:
    counts = _confusion(t, p, k)
    tp = np.diag(counts)
    truth, predicted = counts.sum(axis=1), counts.sum(axis=0)
    present = (truth + predicted) > 0
    return float(np.mean(2 * tp[present] / (truth[present] + predicted[present])))


def _weighted_f1(t: np.ndarray, p: np.ndarray, k: int) -> float:
    counts = _confusion(t, p, k)
    tp = np.diag(counts)
    truth, predicted = counts.sum(axis=1), counts.sum(axis=0)
    present = truth > 0
    f1 = 2 * tp[present] / (truth[present] + predicted[present])
    return float(np.sum(f1 * truth[present]) / truth.sum())


def confusion(y_true: Sequence, y_pred: Sequence, *, labels: Sequence[str]) -> np.ndarray:
    """Counts, shape ``(k, k)`` int: row = true label, column = predicted label, in ``labels`` order."""
    return _confusion(*_pair(y_true, y_pred, labels), len(labels))


def recalls(y_true: Sequence, y_pred: Sequence, *, labels: Sequence[str]) -> np.ndarray:
    """Per-class recall, shape ``(k,)``; NaN for a class absent from ``y_true``."""
    return _recalls(*_pair(y_true, y_pred, labels), len(labels))


def ua(y_true: Sequence, y_pred: Sequence, *, labels: Sequence[str]) -> float:
    """Unweighted accuracy: the mean per-class recall over the classes present in ``y_true``."""
    return _ua(*_pair(y_true, y_pred, labels), len(labels))


def wa(y_true: Sequence, y_pred: Sequence, *, labels: Sequence[str]) -> float:
    """Weighted accuracy: the fraction of items whose prediction equals the truth."""
    return _wa(*_pair(y_true, y_pred, labels), len(labels))


def macro_f1(y_true: Sequence, y_pred: Sequence, *, labels: Sequence[str]) -> float:
    """Unweighted mean of per-class F1 over the classes present in ``y_true`` or ``y_pred`` (0 where undefined)."""
    return _macro_f1(*_pair(y_true, y_pred, labels), len(labels))


def weighted_f1(y_true: Sequence, y_pred: Sequence, *, labels: Sequence[str]) -> float:
    """Per-class F1 averaged with the classes' shares of ``y_true`` as weights (MELD's usual score)."""
    return _weighted_f1(*_pair(y_true, y_pred, labels), len(labels))


_ON_INDICES = {ua: _ua, wa: _wa, macro_f1: _macro_f1, weighted_f1: _weighted_f1}


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
    t, p = _pair(y_true, y_pred, labels)
    if metric in _ON_INDICES:  # the package's metrics run on index arrays, without re-validating
        fast, k = _ON_INDICES[metric], len(labels)
        score = lambda rows: fast(t[rows], p[rows], k)  # noqa: E731
    else:
        y_true, y_pred = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
        score = lambda rows: metric(y_true[rows], y_pred[rows], labels=labels)  # noqa: E731
    values = np.array([score(rows) for rows in _resamples(len(t), groups, n_resamples, seed)])
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return float(low), float(high)


def _resamples(n: int, groups: Sequence | None, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Row indices of each bootstrap replicate: ``n`` items drawn with replacement, or, with
    ``groups``, as many whole groups as there are."""
    rng = np.random.default_rng(seed)
    if groups is None:
        for _ in range(n_resamples):
            yield rng.integers(n, size=n)
        return
    groups = np.asarray(groups)
    if len(groups) != n:
        raise ValueError(f"groups must have one entry per item ({n}), not {len(groups)}")
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    for _ in range(n_resamples):
        yield np.concatenate([members[i] for i in rng.integers(len(members), size=len(members))])


def paired_difference(
    y_true: Sequence,
    pred_a: Sequence,
    pred_b: Sequence,
    *,
    labels: Sequence[str],
    groups: Sequence | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    metric: Callable[..., float] = ua,
) -> tuple[float, tuple[float, float]]:
    """``metric`` (default UA; one of :func:`ua`, :func:`wa`, :func:`macro_f1`, :func:`weighted_f1`)
    of ``pred_a`` minus that of ``pred_b`` on the same items, with a paired bootstrap interval.

    Both systems are scored on each replicate's same rows (whole ``groups`` when given), so the
    interval is of the difference itself, much narrower than comparing two separate intervals.

    Returns:
        ``(difference, (low, high))``.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, not {n_resamples}")
    if metric not in _ON_INDICES:
        raise ValueError(f"metric must be one of {[f.__name__ for f in _ON_INDICES]}, not {metric!r}")
    score = _ON_INDICES[metric]
    t, a = _pair(y_true, pred_a, labels)
    _, b = _pair(y_true, pred_b, labels)
    k = len(labels)
    values = np.array([score(t[r], a[r], k) - score(t[r], b[r], k) for r in _resamples(len(t), groups, n_resamples, seed)])
    alpha = (1 - confidence) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return score(t, a, k) - score(t, b, k), (float(low), float(high))


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
