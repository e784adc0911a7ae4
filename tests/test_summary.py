"""The at-a-glance summary of a timeline: shares of time per emotion, coverage, agreement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from multimodal_ser.summary import coverage_and_agreement, label_shares


@pytest.fixture
def segments():
    """Four segments of 1, 2, 3 and 4 s; the face is missing in the last one, the words in the first."""
    return pd.DataFrame(
        {
            "start": [0.0, 1.0, 3.0, 6.0],
            "end": [1.0, 3.0, 6.0, 10.0],
            "audio_label": ["sad", "angry", "angry", "neutral"],
            "text_label": [None, "angry", "neutral", "neutral"],
            "face_label": ["sad", "happy", "angry", None],
            "label": ["sad", "angry", "angry", "neutral"],
        }
    )


def test_shares_are_weighted_by_seconds_and_sum_to_one(segments):
    shares = label_shares(segments)
    assert list(shares.columns) == ["audio", "text", "face", "fused"]
    np.testing.assert_allclose(shares.sum(), 1.0)
    assert shares.loc["angry", "audio"] == pytest.approx(5 / 10)
    assert shares.loc["neutral", "text"] == pytest.approx(7 / 9)  # the first second has no words
    assert shares.loc["happy", "face"] == pytest.approx(2 / 6)


def test_coverage_and_agreement_count_only_time_both_label(segments):
    table = coverage_and_agreement(segments)
    assert table.loc["text", "coverage"] == pytest.approx(0.9) and table.loc["face", "coverage"] == pytest.approx(0.6)
    assert table.loc["audio", "agrees with fused"] == pytest.approx(1.0)
    assert table.loc["face", "agrees with fused"] == pytest.approx(4 / 6)
    assert np.isnan(table.loc["fused", "agrees with fused"])


def test_a_source_that_labels_nothing_has_no_shares(segments):
    segments["face_label"] = None
    shares = label_shares(segments)
    assert shares["face"].isna().all()
    assert coverage_and_agreement(segments).loc["face", "coverage"] == 0.0


def test_conflicting_segments_are_counted_with_their_seconds(segments):
    from multimodal_ser.summary import conflicts

    assert conflicts(segments) is None  # a timeline from before the column existed
    marked = segments.assign(
        conflict=pd.array([False, True, None, True], dtype="boolean"),
        face_static=pd.array([True, True, False, None], dtype="boolean"),
    )
    assert conflicts(marked) == {"segments": 4, "fused": 4, "conflicting": 2, "conflicting_s": 6.0, "static_face": 2}
