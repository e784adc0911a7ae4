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
from scipy.special import log_softmax, logsumexp

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


def fit_temperature(probabilities: np.ndarray, targets: np.ndarray) -> float:
    """The temperature that minimises the log-loss of held-out predictions.

    Args:
        probabilities: shape ``(n, k)``: a branch's predictions for items it was not trained on.
        targets: shape ``(n,)`` int, the true class of each row; or shape ``(n, k)`` bool, the set
            of classes a row's label stands for (a corpus that does not tell neutral from calm
            marks both), scored by the probability of the whole set.

    Returns:
        ``T`` in :data:`TEMPERATURE_RANGE`.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    targets = np.asarray(targets)
    if probabilities.ndim != 2 or len(probabilities) != len(targets) or len(targets) == 0:
        raise ValueError(f"need (n, k) probabilities and n targets, n > 0; got {probabilities.shape} and {targets.shape}")
    if targets.ndim == 1:
        targets = np.eye(probabilities.shape[1], dtype=bool)[targets.astype(np.int64)]
    if targets.shape != probabilities.shape or not targets.any(axis=1).all():
        raise ValueError(f"target sets must have shape {probabilities.shape} with at least one class per row")
    logs = np.log(np.clip(probabilities, _EPS, 1.0))

    def nll(log_t: float) -> float:
        log_p = log_softmax(logs / np.exp(log_t), axis=1)
        return float(-logsumexp(np.where(targets, log_p, -np.inf), axis=1).mean())

    low, high = np.log(TEMPERATURE_RANGE)
    return float(np.exp(minimize_scalar(nll, bounds=(low, high), method="bounded").x))
