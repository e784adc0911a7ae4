import numpy as np
import pytest

from multimodal_ser.calibration import apply_temperature, fit_temperature


def test_apply_temperature_keeps_the_label_and_softens():
    p = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1]])
    soft = apply_temperature(p, 2.0)
    np.testing.assert_allclose(soft.sum(axis=1), 1.0)
    assert (soft.argmax(axis=1) == p.argmax(axis=1)).all()
    assert (soft.max(axis=1) < p.max(axis=1)).all()
    np.testing.assert_allclose(apply_temperature(p, 1.0), p, atol=1e-12)


def test_fit_temperature_softens_an_overconfident_branch():
    rng = np.random.default_rng(0)
    n, k = 2000, 4
    targets = rng.integers(k, size=n)
    # right 60% of the time but always 0.97 sure: the fitted temperature must soften (T > 1)
    predicted = np.where(rng.random(n) < 0.6, targets, (targets + 1) % k)
    p = np.full((n, k), 0.01)
    p[np.arange(n), predicted] = 0.97
    t = fit_temperature(p, targets)
    assert t > 1.5
    calibrated = apply_temperature(p, t)
    assert abs(calibrated.max(axis=1).mean() - 0.6) < 0.05


def test_fit_temperature_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="targets"):
        fit_temperature(np.ones((3, 2)) / 2, np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="> 0"):
        apply_temperature(np.ones((1, 2)) / 2, 0.0)
