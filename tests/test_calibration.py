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


def test_reliability_table_bins_confidence_against_accuracy():
    from multimodal_ser.calibration import markdown_reliability, reliability_table

    p = np.array([[0.95, 0.05], [0.92, 0.08], [0.55, 0.45], [0.15, 0.85]])
    targets = np.array([0, 1, 0, 1])
    table = reliability_table(p, targets)
    assert [(r["low"], r["n"]) for r in table] == [(0.5, 1), (0.8, 1), (0.9, 2)]
    top = table[-1]
    assert top["confidence"] == pytest.approx(0.935) and top["accuracy"] == pytest.approx(0.5)
    markdown = markdown_reliability(table, reliability_table(apply_temperature(p, 3.0), targets))
    assert "| 0.9-1.0 | 2 | 0.935 | 0.500 |" in markdown
    with pytest.raises(ValueError, match="n targets"):
        reliability_table(p, targets[:3])


def test_mean_prediction_and_stored_temperature():
    from multimodal_ser.calibration import mean_prediction, stored_temperature

    prior = mean_prediction(np.array([[0.8, 0.2, 0.0], [0.4, 0.6, 0.0]]))
    assert prior.sum() == pytest.approx(1.0) and prior[0] == pytest.approx(0.6, abs=1e-3) and prior[2] > 0
    assert stored_temperature({}) == 1.0
    assert stored_temperature({"calibration": {"temperature": 1.7}}) == 1.7
    with pytest.raises(ValueError, match="positive"):
        stored_temperature({"calibration": {"temperature": -1}})


def test_a_head_config_is_extended_without_touching_its_tensors(tmp_path):
    import torch

    from multimodal_ser.files import sha256_file
    from multimodal_ser.heads import load_head, save_head, update_head_config

    path = save_head(tmp_path / "head.safetensors", {"w": torch.arange(6.0).reshape(2, 3)}, {"labels": ["a", "b"]})
    before = sha256_file(path)
    after = update_head_config(path, {"calibration": {"temperature": 1.3}})
    assert after != before and after == sha256_file(path)
    tensors, config = load_head(path)
    assert torch.equal(tensors["w"], torch.arange(6.0).reshape(2, 3))
    assert config == {"labels": ["a", "b"], "calibration": {"temperature": 1.3}}
