import numpy as np
import pandas as pd
import pytest

from multimodal_ser.fusion import LateFusion, fused_columns
from multimodal_ser.grid import modality_table
from multimodal_ser.labels import EMOTIONS


def _segments(audio, text, audio_present, text_present):
    return pd.concat(
        [modality_table("audio", np.array(audio), np.array(audio_present)), modality_table("text", np.array(text), np.array(text_present))],
        axis=1,
    )


def _p(label, mass=0.7):
    p = np.full(len(EMOTIONS), (1 - mass) / (len(EMOTIONS) - 1))
    p[EMOTIONS.index(label)] = mass
    return p


def test_a_missing_modality_drops_out_instead_of_voting_neutral():
    seg = _segments([_p("angry"), _p("angry")], [_p("neutral", 0.99), _p("neutral", 0.99)], [True, True], [True, False])
    fused = fused_columns(seg, LateFusion())
    assert fused.loc[1, "label"] == "angry"
    assert fused.loc[1, "fused_from"] == "audio"
    assert fused.loc[0, "fused_from"] == "audio+text"
    assert fused.loc[1, "fused_angry"] == pytest.approx(0.7)  # audio alone passes through unchanged


def test_no_modality_present_means_no_label():
    seg = _segments([_p("sad")], [_p("sad")], [False], [False])
    fused = fused_columns(seg, LateFusion())
    assert fused.loc[0, "label"] is None and np.isnan(fused.loc[0, "confidence"]) and fused.loc[0, "fused_from"] is None


def test_weights_decide_between_disagreeing_modalities():
    seg = _segments([_p("angry", 0.6)], [_p("happy", 0.6)], [True], [True])
    assert fused_columns(seg, LateFusion(weights={"audio": 2.0, "text": 1.0}))["label"][0] == "angry"
    assert fused_columns(seg, LateFusion(weights={"audio": 1.0, "text": 2.0}))["label"][0] == "happy"


def test_temperature_changes_confidence_not_the_label():
    seg = _segments([_p("angry", 0.6)], [_p("angry", 0.6)], [True], [True])
    sharp = fused_columns(seg, LateFusion(temperature=0.5))
    soft = fused_columns(seg, LateFusion(temperature=4.0))
    assert sharp["label"][0] == soft["label"][0] == "angry"
    assert sharp["confidence"][0] > soft["confidence"][0]
    np.testing.assert_allclose(sharp[[f"fused_{e}" for e in EMOTIONS]].sum(axis=1), 1.0)


def test_invalid_options_are_refused():
    with pytest.raises(ValueError, match="unknown modalities"):
        LateFusion(weights={"smell": 1.0})
    with pytest.raises(ValueError, match="temperature"):
        LateFusion(temperature=0)
