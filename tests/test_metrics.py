"""The evaluation metrics on hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from multimodal_ser.evaluation import metrics

LABELS = ["a", "b", "c"]


def test_ua_and_wa_differ_on_imbalanced_data():
    truth = ["a"] * 8 + ["b"] * 2
    always_a = ["a"] * 10
    assert metrics.wa(truth, always_a, labels=LABELS) == pytest.approx(0.8)
    # recall a = 1, recall b = 0; c is absent from the truth and does not count
    assert metrics.ua(truth, always_a, labels=LABELS) == pytest.approx(0.5)


def test_confusion_counts_rows_are_truth():
    truth = ["a", "a", "b", "b", "c"]
    pred = ["a", "b", "b", "b", "a"]
    expected = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    np.testing.assert_array_equal(metrics.confusion(truth, pred, labels=LABELS), expected)
    np.testing.assert_allclose(metrics.recalls(truth, pred, labels=LABELS), [0.5, 1.0, 0.0])


def test_macro_f1_by_hand():
    truth = ["a"] * 8 + ["b"] * 2
    pred = ["a"] * 9 + ["b"]
    f1_a = 2 * (8 / 9) * 1 / (8 / 9 + 1)
    f1_b = 2 * 1 * 0.5 / (1 + 0.5)
    assert metrics.macro_f1(truth, pred, labels=LABELS) == pytest.approx((f1_a + f1_b) / 2)


def test_bootstrap_interval_contains_the_point_estimate():
    rng = np.random.default_rng(3)
    truth = rng.choice(LABELS, size=300)
    pred = np.where(rng.random(300) < 0.7, truth, rng.choice(LABELS, size=300))
    point = metrics.ua(truth, pred, labels=LABELS)
    low, high = metrics.bootstrap_interval(truth, pred, metrics.ua, labels=LABELS, n_resamples=300, seed=1)
    assert low < point < high
    assert high - low < 0.2
    groups = np.repeat(np.arange(30), 10)
    g_low, g_high = metrics.bootstrap_interval(truth, pred, metrics.ua, labels=LABELS, groups=groups, n_resamples=300)
    assert g_low < point < g_high


def test_paired_difference_is_narrower_than_two_separate_intervals():
    rng = np.random.default_rng(4)
    truth = rng.choice(LABELS, size=300)
    good = np.where(rng.random(300) < 0.8, truth, rng.choice(LABELS, size=300))
    worse = np.where(rng.random(300) < 0.9, good, rng.choice(LABELS, size=300))  # mostly the same answers
    groups = np.repeat(np.arange(30), 10)
    difference, (low, high) = metrics.paired_difference(truth, good, worse, labels=LABELS, groups=groups, n_resamples=300)
    assert difference == pytest.approx(metrics.ua(truth, good, labels=LABELS) - metrics.ua(truth, worse, labels=LABELS))
    assert low < difference < high
    separate = [metrics.bootstrap_interval(truth, p, metrics.ua, labels=LABELS, groups=groups, n_resamples=300) for p in (good, worse)]
    assert high - low < min(h - l for l, h in separate)
    assert metrics.paired_difference(truth, good, good, labels=LABELS, n_resamples=50) == (0.0, (0.0, 0.0))


def test_ece_is_zero_when_calibrated_and_large_when_overconfident():
    # 100 items at confidence 0.8 of which 80 are right, 100 at 0.6 of which 60 are right
    probs, truth = [], []
    for confidence, n_right in ((0.8, 80), (0.6, 60)):
        for i in range(100):
            probs.append([confidence, 1 - confidence, 0.0])
            truth.append("a" if i < n_right else "b")
    assert metrics.expected_calibration_error(np.array(probs), truth, labels=LABELS) == pytest.approx(0.0, abs=1e-12)
    sure = np.tile([1.0, 0.0, 0.0], (10, 1))
    assert metrics.expected_calibration_error(sure, ["a"] * 5 + ["b"] * 5, labels=LABELS) == pytest.approx(0.5)


def test_summary_and_tables():
    truth = ["a", "a", "b", "c"]
    pred = ["a", "b", "b", "c"]
    result = metrics.summary(truth, pred, labels=LABELS, n_resamples=50)
    assert result["n"] == 4 and result["wa"] == pytest.approx(0.75)
    assert result["recall"] == {"a": 0.5, "b": 1.0, "c": 1.0}
    assert result["confusion"][0] == [1, 1, 0]
    table = metrics.markdown_table({"model": {"ua": 0.8333, "ua_ci": (0.5, 1.0)}}, columns=["ua", "ua_ci"])
    assert "| model | 0.833 | [0.500, 1.000] |" in table
    assert "| **a** | 1 | 1 | 0 |" in metrics.markdown_confusion(result["confusion"], labels=LABELS)


def test_bad_inputs_say_what_was_expected():
    with pytest.raises(ValueError, match="expected one of"):
        metrics.ua(["a", "z"], ["a", "a"], labels=LABELS)
    with pytest.raises(ValueError, match="same length"):
        metrics.wa(["a"], ["a", "b"], labels=LABELS)
    with pytest.raises(ValueError, match="confidence"):
        metrics.bootstrap_interval(["a"], ["a"], metrics.ua, labels=LABELS, confidence=1.5)
    with pytest.raises(ValueError, match="shape"):
        metrics.expected_calibration_error(np.ones((2, 2)), ["a", "b"], labels=LABELS)


def test_weighted_f1_matches_sklearn_and_pairs():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    truth = rng.choice(LABELS, size=300, p=[0.6, 0.3, 0.1])
    pred = np.where(rng.random(300) < 0.7, truth, rng.choice(LABELS, size=300))
    expected = f1_score(truth, pred, labels=sorted(set(truth)), average="weighted")
    assert metrics.weighted_f1(truth, pred, labels=LABELS) == pytest.approx(expected)
    difference, (low, high) = metrics.paired_difference(truth, pred, truth, labels=LABELS, metric=metrics.weighted_f1, n_resamples=50)
    assert difference == pytest.approx(expected - 1.0) and low <= difference <= high
