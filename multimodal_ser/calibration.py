"""Calibration of a branch's probabilities: temperature scaling fitted on held-out predictions.

A branch is calibrated when, of all the segments it gives a confidence of 0.8, about 80% are
right. Each head stores one temperature ``T`` fitted on predictions for data it was not trained
on (held-out speakers, a held-out split); its calibrated distribution is ``p^(1/T)``
renormalised, which leaves the argmax (the label) unchanged and only softens (``T > 1``) or
sharpens (``T < 1``) the confidence.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

TEMPERATURE_RANGE = (0.05, 20.0)
"""Bounds of the fitted temperature."""
_EPS = 1e-9


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """``p^(1/T)`` renormalised per row.

    Args:
        probabilities: shape ``(n, k)``, rows summing to 1.
        temperature: ``T > 0``.

    Returns:
        shape ``(n, k)`` float64, rows summing to 1.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, not {temperature}")
    logs = np.log(np.clip(np.asarray(probabilities, dtype=np.float64), _EPS, 1.0))
    return np.exp(log_softmax(logs / temperature, axis=-1))


def fit_temperature(
    probabilities: np.ndarray, targets: np.ndarray, *, weights: np.ndarray | None = None, into: np.ndarray | None = None
) -> float:
    """The temperature that minimises the log-loss of held-out predictions.

    Args:
        probabilities: shape ``(n, k)``: a branch's predictions for items it was not trained on.
        targets: shape ``(n,)`` int: the true class index of each row.
        weights: shape ``(n,)`` non-negative weight of each row in the log-loss (e.g. so that two
            corpora count the same); None weighs rows equally.
        into: shape ``(k, k')``: the calibrated probabilities are summed into ``k'`` classes
            (``p @ into``) before scoring, and ``targets`` index those (the voice head's 8 classes
            scored in the shared 7, calm into neutral); None scores the ``k`` classes themselves.

    Returns:
        ``T`` in :data:`TEMPERATURE_RANGE`.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if probabilities.ndim != 2 or len(probabilities) != len(targets) or len(targets) == 0:
        raise ValueError(f"need (n, k) probabilities and n targets, n > 0; got {probabilities.shape} and {targets.shape}")
    w = np.ones(len(targets)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != targets.shape or (w < 0).any() or not w.sum() > 0:
        raise ValueError(f"weights must be {len(targets)} non-negative numbers with a positive sum")
    w = w / w.sum()
    logs = np.log(np.clip(probabilities, _EPS, 1.0))
    rows = np.arange(len(targets))

    def nll(log_t: float) -> float:
        log_p = log_softmax(logs / np.exp(log_t), axis=1)
        if into is not None:
            log_p = np.log(np.clip(np.exp(log_p) @ into, _EPS, 1.0))
        return float(-(w * log_p[rows, targets]).sum())

    low, high = np.log(TEMPERATURE_RANGE)
    return float(np.exp(minimize_scalar(nll, bounds=(low, high), method="bounded").x))


RELIABILITY_BINS = 10
"""Equal-width confidence bins of :func:`reliability_table` (the ECE itself uses 15, see
:func:`multimodal_ser.evaluation.metrics.expected_calibration_error`)."""


def reliability_table(probabilities: np.ndarray, targets: np.ndarray, *, n_bins: int = RELIABILITY_BINS) -> list[dict]:
    """Binned top-class confidence against accuracy: the numbers of a reliability diagram.

    Args:
        probabilities: shape ``(n, k)``.
        targets: shape ``(n,)`` int, the true class index of each row.
        n_bins: equal-width bins on [0, 1].

    Returns:
        one dict per non-empty bin: ``low``, ``high`` (bin edges), ``n`` (rows),
        ``confidence`` (mean top-class probability) and ``accuracy`` (share of rows whose top
        class is right).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64)
    if probabilities.ndim != 2 or len(probabilities) != len(targets):
        raise ValueError(f"need (n, k) probabilities and n targets; got {probabilities.shape} and {targets.shape}")
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, not {n_bins}")
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == targets
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    rows = []
    for b in range(n_bins):
        inside = bins == b
        if inside.any():
            rows.append({
                "low": b / n_bins, "high": (b + 1) / n_bins, "n": int(inside.sum()),
                "confidence": float(confidence[inside].mean()), "accuracy": float(correct[inside].mean()),
            })
    return rows


def markdown_reliability(before: list[dict], after: list[dict]) -> str:
    """Two :func:`reliability_table` results side by side as a Markdown table (one row per bin)."""
    index_before = {(r["low"], r["high"]): r for r in before}
    index_after = {(r["low"], r["high"]): r for r in after}
    lines = [
        "| confidence bin | n before | mean confidence before | accuracy before | n after | mean confidence after | accuracy after |",
        "|---|---|---|---|---|---|---|",
    ]
    for low, high in sorted(set(index_before) | set(index_after)):
        cells = []
        for table in (index_before, index_after):
            row = table.get((low, high))
            cells += ["0", "", ""] if row is None else [str(row["n"]), f"{row['confidence']:.3f}", f"{row['accuracy']:.3f}"]
        lines.append(f"| {low:.1f}-{high:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mean_prediction(probabilities: np.ndarray) -> np.ndarray:
    """A branch's prior as it sees it: its mean (calibrated) probability vector over held-out data.

    Fusion reads a branch's evidence relative to this prior (``log p - log prior``), so a branch
    that only repeats what it says about everything moves the fused result little.

    Returns:
        shape ``(k,)``, summing to 1, each entry at least 1e-4 (then renormalised).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or len(probabilities) == 0:
        raise ValueError(f"need (n, k) probabilities with n > 0, got {probabilities.shape}")
    prior = np.clip(probabilities.mean(axis=0), 1e-4, None)
    return prior / prior.sum()


def stored_temperature(config: dict, key: str = "temperature") -> float:
    """The temperature a head's config stores under ``calibration``; 1.0 when it has none.

    Raises:
        ValueError: the stored value is not a positive number.
    """
    calibration = config.get("calibration") or {}
    value = calibration.get(key, 1.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"calibration {key} must be a positive number, found {value!r}")
    return float(value)
