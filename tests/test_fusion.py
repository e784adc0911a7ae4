import json

import numpy as np
import pandas as pd
import pytest

from multimodal_ser.errors import ModelError
from multimodal_ser.evaluation.metrics import expected_calibration_error
from multimodal_ser.fusion import (
    LateFusion,
    balanced_row_weights,
    fit_late_fusion,
    fit_temperature,
    fused_columns,
    load_fusion,
    load_late_fusion,
)
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


# --- learning the weights (stacking), temperature scaling, saving -------------------------------------
# The probability tables below are synthetic: they test the optimiser only and never train a shipped model.


def _noisy_probabilities(rng, targets, strength):
    """Rows of probabilities whose logit of ``targets`` is raised by ``strength`` (0 = pure noise)."""
    logits = rng.normal(size=(len(targets), len(EMOTIONS)))
    logits[np.arange(len(targets)), targets] += strength
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


@pytest.fixture
def informative_and_noise():
    rng = np.random.default_rng(7)
    n = 600
    y = rng.integers(len(EMOTIONS), size=n)
    audio = _noisy_probabilities(rng, y, 2.5)
    text = _noisy_probabilities(rng, rng.integers(len(EMOTIONS), size=n), 2.5)  # confident, unrelated to the truth
    seg = _segments(audio, text, np.ones(n, bool), rng.random(n) < 0.8)
    return seg, [EMOTIONS[i] for i in y]


def test_stacking_gives_pure_noise_a_near_zero_weight(informative_and_noise):
    seg, labels = informative_and_noise
    learned = fit_late_fusion(seg, labels, modalities=("audio", "text"))
    assert learned.weights["text"] < 0.05 * learned.weights["audio"]
    assert learned.weights["audio"] == pytest.approx(1.0)  # weights are relative to the most reliable modality
    assert "face" not in learned.weights
    fused, _ = learned.fuse(seg)
    default, _ = LateFusion().fuse(seg)
    truth = np.array([EMOTIONS.index(label) for label in labels])
    assert (fused.argmax(1) == truth).mean() > (default.argmax(1) == truth).mean() + 0.1


def test_stacking_weighs_the_more_informative_modality_higher():
    rng = np.random.default_rng(11)
    y = rng.integers(len(EMOTIONS), size=800)
    seg = _segments(_noisy_probabilities(rng, y, 3.0), _noisy_probabilities(rng, y, 1.0), np.ones(800, bool), np.ones(800, bool))
    learned = fit_late_fusion(seg, [EMOTIONS[i] for i in y], modalities=("audio", "text"))
    assert learned.weights["audio"] > 1.5 * learned.weights["text"] > 0


def test_stacking_refuses_bad_input(informative_and_noise):
    seg, labels = informative_and_noise
    with pytest.raises(ValueError, match="one entry per segment"):
        fit_late_fusion(seg, labels[:-1])
    with pytest.raises(ValueError, match="names of"):
        fit_late_fusion(seg, ["calm"] * len(seg))
    with pytest.raises(ValueError, match="distinct names"):
        fit_late_fusion(seg, labels, modalities=("audio", "smell"))
    with pytest.raises(ValueError, match="no segment"):
        fit_late_fusion(seg, labels, modalities=("face",))


@pytest.mark.parametrize("fusion", [LateFusion(), LateFusion(weights={"audio": 0.7, "text": 2.5, "face": 1.0}, temperature=1.7)])
def test_an_absent_modality_never_influences_the_result(fusion):
    rng = np.random.default_rng(5)
    audio = _noisy_probabilities(rng, rng.integers(7, size=50), 2.0)
    text_present = rng.random(50) < 0.5
    one = _segments(audio, _noisy_probabilities(rng, rng.integers(7, size=50), 2.0), np.ones(50, bool), text_present)
    other = one.copy()
    garbage = _noisy_probabilities(rng, rng.integers(7, size=50), 5.0)
    for j, label in enumerate(EMOTIONS):  # rewrite the hidden values behind the absent rows
        other.loc[~text_present, f"text_{label}"] = garbage[~text_present, j]
    np.testing.assert_array_equal(fusion.fuse(one)[0], fusion.fuse(other)[0])
    only_audio = fusion.fuse(one)[0][~text_present]
    expected = LateFusion(weights={"audio": fusion.weights["audio"]}, temperature=fusion.temperature).fuse(one[~text_present])[0]
    np.testing.assert_allclose(only_audio, expected)


def test_temperature_scaling_lowers_the_calibration_error_of_an_overconfident_table():
    rng = np.random.default_rng(3)
    y = rng.integers(len(EMOTIONS), size=1500)
    calibrated_logits = rng.normal(size=(1500, 7))
    calibrated_logits[np.arange(1500), y] += 1.5
    overconfident = np.exp(3.0 * calibrated_logits)  # sharpened: confidence far above accuracy
    overconfident /= overconfident.sum(axis=1, keepdims=True)
    seg = _segments(overconfident, overconfident, np.ones(1500, bool), np.zeros(1500, bool))
    labels = [EMOTIONS[i] for i in y]
    before = LateFusion(weights={"audio": 1.0})
    after = fit_temperature(before, seg, labels)
    assert after.temperature > 1.5 and after.weights == before.weights
    ece_before = expected_calibration_error(before.fuse(seg)[0], labels, labels=EMOTIONS)
    ece_after = expected_calibration_error(after.fuse(seg)[0], labels, labels=EMOTIONS)
    assert ece_after < 0.5 * ece_before
    np.testing.assert_array_equal(before.fuse(seg)[0].argmax(1), after.fuse(seg)[0].argmax(1))


def test_learned_parameters_round_trip_through_json(tmp_path, informative_and_noise):
    seg, labels = informative_and_noise
    learned = fit_late_fusion(seg, labels, modalities=("audio", "text"), provenance={"data": "synthetic test table"})
    path = learned.save(tmp_path / "late.json")
    loaded = load_late_fusion(path)
    assert loaded == learned  # weights, temperature and name; provenance is not compared
    assert loaded.provenance["data"] == "synthetic test table" and len(loaded.provenance["file"]["sha256"]) == 64
    assert loaded.describe()["provenance"]["method"].startswith("stacking")
    np.testing.assert_allclose(loaded.fuse(seg)[0], learned.fuse(seg)[0])
    assert load_fusion("late", path) == learned
    assert load_fusion("equal") == LateFusion(name="equal")


def test_loading_refuses_files_that_are_not_late_fusion(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_late_fusion(tmp_path / "missing.json")
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    with pytest.raises(ModelError, match="format must be"):
        load_late_fusion(tmp_path / "other.json")
    (tmp_path / "bad.json").write_text("not json")
    with pytest.raises(ModelError, match="not a JSON"):
        load_late_fusion(tmp_path / "bad.json")
    good = json.loads(LateFusion().save(tmp_path / "good.json").read_text())
    good["weights"]["audio"] = -1
    (tmp_path / "negative.json").write_text(json.dumps(good))
    with pytest.raises(ModelError, match="invalid late-fusion parameters"):
        load_late_fusion(tmp_path / "negative.json")
    with pytest.raises(ValueError, match="fusion kind"):
        load_fusion("median")
    with pytest.raises(ValueError, match="takes no weights file"):
        load_fusion("default", tmp_path / "good.json")


def test_fused_from_names_only_the_modalities_the_fusion_reads():
    seg = _segments([_p("angry")] * 2, [_p("happy")] * 2, [True, True], [True, False])
    fused = fused_columns(seg, LateFusion(weights={"audio": 1.0, "text": 0.0}))
    assert list(fused["fused_from"]) == ["audio", "audio"]
    assert list(fused["label"]) == ["angry", "angry"]


# --- evidence relative to each branch's prior, quality, agreement --------------------------------------


def _with_face(seg, face, quality):
    table = modality_table("face", np.array(face), np.ones(len(face), bool))
    table["face_quality"] = quality
    return pd.concat([seg, table], axis=1)


def test_a_branch_that_repeats_its_prior_moves_nothing():
    text_prior = _p("neutral", 0.5)
    seg = _segments([_p("angry", 0.6)], [text_prior], [True], [True])
    fusion = LateFusion(weights={"audio": 1.0, "text": 1.0}, priors={"text": text_prior})
    np.testing.assert_allclose(fusion.fuse(seg)[0][0], _p("angry", 0.6))
    # without the prior, the same neutral-leaning words drag the result towards neutral
    assert LateFusion(weights={"audio": 1.0, "text": 1.0}).fuse(seg)[0][0][0] > 2 * _p("angry", 0.6)[0]


def test_a_static_face_never_overturns_voice_and_words_that_agree():
    seg = _segments([_p("angry", 0.45)], [_p("angry", 0.45)], [True], [True])
    face = [_p("happy", 0.999)]
    fusion = LateFusion(weights={"audio": 1.0, "text": 1.0, "face": 1.0})
    assert fused_columns(_with_face(seg, face, 1.0), fusion)["label"][0] == "happy"  # a moving face this sure would
    still = fused_columns(_with_face(seg, face, 0.05), fusion)
    assert still["label"][0] == "angry" and still["fused_from"][0] == "audio+text+face"
    assert not still["conflict"][0]  # the static face does not make a conflict either
    with pytest.raises(ValueError, match=r"face_quality must be in \[0, 1\]"):
        fusion.fuse(_with_face(seg, face, 1.5))


def test_agreement_runner_up_and_conflict_say_how_far_the_branches_back_the_label():
    agree = _segments([_p("angry", 0.7)], [_p("angry", 0.6)], [True], [True])
    clash = _segments([_p("angry", 0.7)], [_p("sad", 0.7)], [True], [True])
    alone = _segments([_p("angry", 0.7)], [_p("sad", 0.7)], [True], [False])
    fusion = LateFusion(weights={"audio": 1.0, "text": 0.9})
    a, c, one = (fused_columns(s, fusion) for s in (agree, clash, alone))
    assert a["agreement"][0] == pytest.approx(1.0) and not a["conflict"][0]
    assert c["label"][0] == "angry" and c["runner_up"][0] == "sad"
    assert c["agreement"][0] < 0.75 and c["conflict"][0]
    assert c["confidence"][0] < one["confidence"][0] < a["confidence"][0]  # disagreement lowers the confidence
    assert one["agreement"][0] == pytest.approx(1.0) and not one["conflict"][0]
    none = fused_columns(_segments([_p("sad")], [_p("sad")], [False], [False]), fusion)
    assert none["runner_up"][0] is None and np.isnan(none["agreement"][0]) and pd.isna(none["conflict"][0])


def test_a_modality_masked_out_of_the_fit_keeps_the_weight_it_was_given(informative_and_noise):
    seg, labels = informative_and_noise
    masked = fit_late_fusion(seg, labels, modalities=("audio", "text"), fit_mask={"text": np.zeros(len(seg), bool)},
                             fixed={"text": 0.8})
    plain = fit_late_fusion(seg, labels, modalities=("audio", "text"))
    assert masked.weights["text"] / masked.temperature == pytest.approx(0.8)
    assert plain.weights["text"] < 0.05


def test_balanced_row_weights_give_each_source_and_class_the_same_total():
    labels = np.array(["happy", "happy", "happy", "sad", "neutral", "neutral"])
    sources = np.array(["a", "a", "a", "a", "b", "b"])
    w = balanced_row_weights(labels, sources)
    assert w.sum() == pytest.approx(1.0)
    assert w[sources == "a"].sum() == pytest.approx(0.5) and w[3] == pytest.approx(0.25) and w[0] == pytest.approx(0.25 / 3)


def test_version_1_files_read_as_uniform_priors(tmp_path):
    document = {"format": "multimodal-ser/late-fusion", "version": 1, "labels": list(EMOTIONS),
                "weights": {"audio": 1.0, "text": 0.5}, "temperature": 1.2, "provenance": {}}
    (tmp_path / "v1.json").write_text(json.dumps(document))
    loaded = load_late_fusion(tmp_path / "v1.json")
    assert loaded.priors == {} and loaded.weights == {"audio": 1.0, "text": 0.5}
    with pytest.raises(ValueError, match="prior of text"):
        LateFusion(priors={"text": [0.5, 0.5]})


def test_the_lapse_stops_one_branch_from_vetoing_what_the_other_sees():
    veto = np.full(len(EMOTIONS), 0.25)
    veto[EMOTIONS.index("fearful")] = 1e-6
    veto /= veto.sum()
    seg = _segments([_p("fearful", 0.6)], [veto], [True], [True])
    assert fused_columns(seg, LateFusion())["label"][0] != "fearful"
    assert fused_columns(seg, LateFusion(lapse=0.3))["label"][0] == "fearful"
    with pytest.raises(ValueError, match="lapse"):
        LateFusion(lapse=1.0)


def test_a_lapse_per_branch_lets_words_add_evidence_but_not_veto():
    # neutral words that rule sad out, spoken with a clearly sad voice
    voice, words = _p("sad", 0.7), np.full(len(EMOTIONS), 0.3 / 6)
    words[EMOTIONS.index("neutral")] = 0.7
    words[EMOTIONS.index("sad")], words[EMOTIONS.index("angry")] = 1e-4, 0.3 / 6 + 1e-4
    seg = _segments([voice], [words], [True], [True])
    assert fused_columns(seg, LateFusion(lapse=0.1))["label"][0] != "sad"
    lenient = LateFusion(lapse={"text": 0.9, "audio": 0.1})
    assert fused_columns(seg, lenient)["label"][0] == "sad"
    # the same lapse still lets strongly sad words speak where the voice is unsure
    seg = _segments([np.full(len(EMOTIONS), 1 / len(EMOTIONS))], [_p("sad", 0.95)], [True], [True])
    assert fused_columns(seg, lenient)["label"][0] == "sad"
    with pytest.raises(ValueError, match="unknown modalities"):
        LateFusion(lapse={"smell": 0.5})


def test_neutral_words_lose_their_say_only_beside_another_branch():
    # a voice between sad and neutral, with words that read as neutral and, faintly, as not sad
    voice = np.full(len(EMOTIONS), 0.2 / 5)
    voice[EMOTIONS.index("sad")], voice[EMOTIONS.index("neutral")] = 0.45, 0.35
    words = _p("neutral", 0.8)
    words[EMOTIONS.index("sad")] = 0.01
    words /= words.sum()
    seg = _segments([voice, voice], [words, words], [True, False], [True, True])
    full, withdrawn = LateFusion(), LateFusion(neutral_say={"text": 0.0})
    assert list(fused_columns(seg, full)["label"]) == ["neutral", "neutral"]
    assert list(fused_columns(seg, withdrawn)["label"]) == ["sad", "neutral"]  # alone, the words decide as before
    np.testing.assert_allclose(full.fuse(seg[1:])[0], withdrawn.fuse(seg[1:])[0])
    voice_alone = LateFusion().fuse(_segments([voice], [words], [True], [False]))[0]
    np.testing.assert_allclose(withdrawn.fuse(seg[:1])[0], voice_alone)  # neither for neutral nor against sad
    half = LateFusion(neutral_say={"text": 0.5}).fuse(seg[:1])[0][0, EMOTIONS.index("neutral")]
    assert withdrawn.fuse(seg[:1])[0][0, EMOTIONS.index("neutral")] < half < full.fuse(seg[:1])[0][0, EMOTIONS.index("neutral")]


def test_emotional_words_keep_their_full_say():
    seg = _segments([np.full(len(EMOTIONS), 1 / len(EMOTIONS))], [_p("angry", 0.8)], [True], [True])
    fusion = LateFusion(neutral_say={"text": 0.0}, lapse={"text": 0.7})
    np.testing.assert_allclose(fusion.fuse(seg)[0], LateFusion(lapse={"text": 0.7}).fuse(seg)[0])
    with pytest.raises(ValueError, match="neutral say"):
        LateFusion(neutral_say={"text": 1.5})
    with pytest.raises(ValueError, match="neutral say for unknown modalities"):
        LateFusion(neutral_say={"smell": 0.5})


def test_the_lapse_is_saved_and_older_files_read_without_one(tmp_path):
    path = LateFusion(weights={"audio": 1.0, "text": 0.5}, lapse={"text": 0.7, "audio": 0.2}, neutral_say={"text": 0.5}).save(tmp_path / "w.json")
    assert load_late_fusion(path).lapse == {"audio": 0.2, "text": 0.7, "face": 0.0}
    assert load_late_fusion(path).neutral_say == {"audio": 1.0, "text": 0.5, "face": 1.0}
    document = json.loads(path.read_text())
    document.update(version=5)  # version 5: a neutral say under an earlier rule
    path.write_text(json.dumps(document))
    with pytest.raises(ModelError, match="version 5.*learn it again"):
        load_late_fusion(path)
    document.update(version=4)  # version 4: no neutral say, every branch has its full say
    del document["neutral_say"]
    path.write_text(json.dumps(document))
    assert load_late_fusion(path).neutral_say == {"audio": 1.0, "text": 1.0, "face": 1.0}
    document.update(version=3, lapse=0.3)  # version 3: one lapse for every branch
    path.write_text(json.dumps(document))
    assert load_late_fusion(path).lapse == {"audio": 0.3, "text": 0.3, "face": 0.3}
    document.update(version=2)
    del document["lapse"]
    path.write_text(json.dumps(document))
    assert load_late_fusion(path).lapse == {"audio": 0.0, "text": 0.0, "face": 0.0}
