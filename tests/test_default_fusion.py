"""The recipe of the packaged default late fusion, on synthetic tables (they test the recipe only;
no shipped model is trained on them)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from multimodal_ser.grid import modality_table
from multimodal_ser.labels import EMOTIONS
from multimodal_ser.training.fusion.late import fit_default_fusion, informative_modalities


def _probabilities(rng, targets, strength):
    logits = rng.normal(size=(len(targets), len(EMOTIONS)))
    logits[np.arange(len(targets)), targets] += strength
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


@pytest.fixture
def mixed():
    """RAVDESS-like rows: informative voice, words that are one neutral sentence whatever the label;
    MELD-like rows: informative words only."""
    rng = np.random.default_rng(0)
    n_a, n_t = 420, 420
    y_a, y_t = rng.integers(7, size=n_a), rng.integers(7, size=n_t)
    sentence = np.tile(np.array([0.5, 0.1, 0.08, 0.08, 0.08, 0.08, 0.08]), (n_a, 1))
    audio = np.vstack([_probabilities(rng, y_a, 2.5), np.full((n_t, 7), np.nan)])
    text = np.vstack([sentence, _probabilities(rng, y_t, 1.5)])
    audio_present = np.r_[np.ones(n_a, bool), np.zeros(n_t, bool)]
    table = pd.concat([modality_table("audio", audio, audio_present), modality_table("text", text, np.ones(n_a + n_t, bool))], axis=1)
    labels = np.array([EMOTIONS[i] for i in np.r_[y_a, y_t]], dtype=object)
    sources = np.array(["ravdess"] * n_a + ["meld"] * n_t, dtype=object)
    return table, labels, sources


def test_words_are_judged_uninformative_where_they_never_change(mixed):
    table, labels, sources = mixed
    judged = informative_modalities(table, labels, sources, ("audio", "text"), priors={})
    assert judged["ravdess"]["audio"]["informative"] and not judged["ravdess"]["text"]["informative"]
    assert judged["meld"]["text"]["informative"] and "audio" not in judged["meld"]


def test_the_words_keep_a_weight_learned_where_they_carry_emotion(mixed):
    table, labels, sources = mixed
    prior = tuple(np.nanmean(table[[f"text_{e}" for e in EMOTIONS]].to_numpy()[sources == "meld"], axis=0))
    fusion, _ = fit_default_fusion(table, labels, sources, ("audio", "text"), priors={"text": prior})
    effective = {m: w / fusion.temperature for m, w in fusion.weights.items()}
    assert effective["text"] > 0.3 and effective["audio"] > 0.3
    # a plain stack on the same rows lets the RAVDESS words pull the weight of all words down
    from multimodal_ser.fusion import fit_late_fusion

    plain = fit_late_fusion(table, list(labels), modalities=("audio", "text"), priors={"text": prior})
    assert plain.weights["text"] / plain.temperature < effective["text"]
    # on RAVDESS-like rows it does better than the product of equal weights, which the sentence drags to neutral
    from multimodal_ser.fusion import LateFusion

    ravdess = sources == "ravdess"
    truth = np.array([EMOTIONS.index(label) for label in labels[ravdess]])
    fused = fusion.fuse(table[ravdess])[0].argmax(axis=1)
    equal = LateFusion().fuse(table[ravdess])[0].argmax(axis=1)
    assert (fused == truth).mean() > (equal == truth).mean() + 0.05


def test_a_sentence_read_as_neutral_whatever_the_voice_says_loses_its_say_beside_the_voice(mixed):
    table, labels, sources = mixed
    # the RAVDESS-like sentence read as a text head reads "Kids are talking by the door.": neutral,
    # and all but ruling out sad, fearful and disgust, whatever the voice says
    sentence = np.array([0.45, 0.35, 0.01, 0.13, 0.01, 0.005, 0.045])
    text = table[[f"text_{e}" for e in EMOTIONS]].to_numpy()
    text[sources == "ravdess"] = sentence
    table = table.assign(group=[f"{s}-{i % 6}" for i, s in enumerate(sources)], **{f"text_{e}": text[:, k] for k, e in enumerate(EMOTIONS)})
    prior = tuple(np.nanmean(text[sources == "meld"], axis=0))
    fusion, _ = fit_default_fusion(table, labels, sources, ("audio", "text"), priors={"text": prior})
    choice = fusion.provenance["lapse_choice"]
    assert choice["folds"] == 3 and set(choice["per_modality"]) == {"audio", "text"}
    for m in ("audio", "text"):
        assert choice["per_modality"][m][fusion.lapse[m]] == min(choice["per_modality"][m].values())
    # held-out log-loss wants the words that read as neutral silent beside the voice
    assert fusion.neutral_say["text"] < 1.0 and fusion.neutral_say["audio"] == 1.0
    assert choice["neutral_say"][1.0] > min(choice["neutral_say"].values())
    assert choice["neutral_say"][fusion.neutral_say["text"]] == min(choice["neutral_say"].values())
