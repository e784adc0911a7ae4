"""Attention fusion: training, masks for absent modalities, modality dropout, storage.

The probability and embedding tables here are synthetic and small: they test the module and its
training loop only, never a shipped model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from multimodal_ser.errors import ModelError
from multimodal_ser.fusion import attention as af
from multimodal_ser.fusion import fused_columns
from multimodal_ser.fusion.attention_training import fit_attention_fusion, modality_dropout, stacked_pool
from multimodal_ser.grid import modality_table
from multimodal_ser.heads import save_head
from multimodal_ser.labels import EMOTIONS

FAST = af.AttentionOptions(width=16, heads=2, epochs=40, patience=8, batch_size=32)


def _probabilities(rng, targets, strength):
    logits = rng.normal(size=(len(targets), len(EMOTIONS)))
    logits[np.arange(len(targets)), targets] += strength
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


def _table(rng, n, *, text_rate=0.7):
    """Audio informative (probabilities and embedding), text pure noise and sometimes absent."""
    y = rng.integers(len(EMOTIONS), size=n)
    audio_embedding = rng.normal(size=(n, 12)).astype(np.float32)
    audio_embedding[:, :7] += 2.0 * np.eye(7)[y]
    seg = pd.concat(
        [
            modality_table("audio", _probabilities(rng, y, 1.5), np.ones(n, bool), audio_embedding),
            modality_table("text", _probabilities(rng, rng.integers(7, size=n), 2.0), rng.random(n) < text_rate,
                           rng.normal(size=(n, 6)).astype(np.float32)),
        ],
        axis=1,
    )
    return seg, [EMOTIONS[i] for i in y]


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    train, y_train = _table(rng, 300)
    val, y_val = _table(rng, 100)
    fusion = fit_attention_fusion(train, y_train, validation=(val, y_val), modalities=("audio", "text"), options=FAST, seed=0)
    test, y_test = _table(rng, 200)
    return fusion, test, y_test


def test_it_trains_on_a_small_table_and_beats_the_noise(trained):
    fusion, test, y_test = trained
    probs, present = fusion.fuse(test)
    assert present.all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    truth = np.array([EMOTIONS.index(y) for y in y_test])
    accuracy = (probs.argmax(1) == truth).mean()
    audio_alone = (test[[f"audio_{e}" for e in EMOTIONS]].to_numpy().argmax(1) == truth).mean()
    assert accuracy >= audio_alone - 0.03  # the noisy text does not drag it below the voice
    assert accuracy > 3 / len(EMOTIONS)
    assert fusion.config["training"]["best_epoch"] <= fusion.config["training"]["epochs_run"]
    assert 0.05 <= fusion.temperature <= 20


def test_training_never_ends_worse_on_validation_than_the_stacked_pool_it_starts_from():
    """A learning rate that wrecks the module in its first epoch: it must come back as the
    stacked pool it started from (epoch 0), not as the wreck."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(3)
    train, y_train = _table(rng, 200)
    val, y_val = _table(rng, 80)
    options = af.AttentionOptions(width=16, heads=2, epochs=3, patience=2, batch_size=32, learning_rate=3.0, weight_decay=0.0)
    fusion = fit_attention_fusion(train, y_train, validation=(val, y_val), modalities=("audio", "text"), options=options, seed=0)
    assert fusion.config["training"]["best_epoch"] == 0
    # epoch 0: the attention path is zero and the skip path holds the stacked weights w / T
    assert float(fusion.module.head[1].weight.detach().abs().max()) == 0.0
    pool = stacked_pool(train, y_train, ("audio", "text"))
    softplus = torch.nn.functional.softplus(fusion.module.beta).detach().numpy()
    np.testing.assert_allclose(softplus, [max(pool["audio"], 1e-3), max(pool["text"], 1e-3)], rtol=1e-5)


def test_rows_missing_a_modality_are_fused_and_rows_missing_all_get_no_label(trained):
    fusion, test, _ = trained
    both = np.flatnonzero(test["text_present"].to_numpy())
    seg = test.iloc[both[:4]].copy()  # four rows with both modalities, then some taken away
    seg.loc[seg.index[1], "text_present"] = False
    seg.loc[seg.index[2], ["audio_present", "text_present"]] = False
    seg.loc[seg.index[3], "audio_present"] = False
    out = fused_columns(seg, fusion)
    assert list(out["fused_from"]) == ["audio+text", "audio", None, "text"]
    assert out["label"].iloc[2] is None and np.isnan(out["confidence"].iloc[2])
    assert out[[f"fused_{e}" for e in EMOTIONS]].iloc[[0, 1, 3]].notna().all().all()


def test_an_absent_modality_never_influences_the_result(trained):
    fusion, test, _ = trained
    absent = ~test["text_present"].to_numpy()
    assert absent.any()
    other = test.copy()
    rng = np.random.default_rng(9)
    for label in EMOTIONS:
        other.loc[absent, f"text_{label}"] = rng.random(absent.sum())
    other["text_embedding"] = [
        e if p else rng.normal(size=6).astype(np.float32) for e, p in zip(other["text_embedding"], ~absent)
    ]
    np.testing.assert_allclose(fusion.fuse(test)[0], fusion.fuse(other)[0], atol=1e-6)


def test_modality_dropout_hides_modalities_but_never_all_of_a_row():
    generator = torch.Generator().manual_seed(0)
    present = torch.tensor([[True, True, True]] * 500 + [[True, False, False]] * 100 + [[False, False, False]] * 10)
    kept = modality_dropout(present, 0.6, generator)
    assert not (kept & ~present).any()  # never invents a modality
    assert kept[:600].any(dim=1).all()  # every row with something present keeps something
    assert not kept[600:].any()
    assert kept[:500].sum() < 0.7 * present[:500].sum()  # it does hide modalities
    assert kept[500:600, 0].all()  # a row's only modality is never hidden


def test_it_round_trips_through_safetensors(tmp_path, trained):
    fusion, test, _ = trained
    path = fusion.save(tmp_path / "fusion.safetensors")
    loaded = af.load_attention_fusion(path)
    np.testing.assert_allclose(loaded.fuse(test)[0], fusion.fuse(test)[0], atol=1e-6)
    described = loaded.describe()
    assert described["fusion"] == "attention" and loaded.name == "attention"
    assert described["modalities"] == ["audio", "text"] and described["ignored_modalities"] == ["face"]
    assert len(described["file"]["sha256"]) == 64


def test_a_modality_it_was_never_trained_on_is_ignored(trained, caplog):
    fusion, test, _ = trained
    rng = np.random.default_rng(1)
    face = modality_table("face", _probabilities(rng, rng.integers(7, size=len(test)), 4.0), np.ones(len(test), bool),
                          rng.normal(size=(len(test), 5)).astype(np.float32))
    with_face = pd.concat([test, face], axis=1)
    np.testing.assert_allclose(fusion.fuse(with_face)[0], fusion.fuse(test)[0], atol=1e-6)
    assert "not trained on face" in caplog.text
    assert set(fused_columns(with_face, fusion)["fused_from"].dropna()) <= {"audio", "audio+text", "text"}


def test_loading_refuses_what_is_not_an_attention_fusion(tmp_path, monkeypatch):
    monkeypatch.setattr(af, "DEFAULT_PATH", tmp_path / "absent.safetensors")
    with pytest.raises(ModelError, match="mser train fusion"):
        af.load_attention_fusion()
    other = save_head(tmp_path / "other.safetensors", {"w": torch.zeros(2)}, {"labels": list(EMOTIONS)})
    with pytest.raises(ModelError, match="expected format"):
        af.load_attention_fusion(other)


def test_training_refuses_bad_input():
    rng = np.random.default_rng(2)
    seg, labels = _table(rng, 20)
    with pytest.raises(ValueError, match="no segment"):
        fit_attention_fusion(seg, labels, modalities=("face",), options=FAST)
    with pytest.raises(ValueError, match="names of"):
        fit_attention_fusion(seg, ["bored"] * 20, options=FAST)
    with pytest.raises(ValueError, match="must divide"):
        af.AttentionOptions(width=10, heads=3)
    broken = seg.copy()
    broken.at[broken.index[0], "audio_embedding"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="size"):
        fit_attention_fusion(broken, labels, options=FAST)


def test_a_modality_can_be_read_from_its_probabilities_alone(tmp_path):
    rng = np.random.default_rng(4)
    seg, labels = _table(rng, 120)
    options = af.AttentionOptions(width=16, heads=2, epochs=5, patience=5, embeddings=("text",))
    fusion = fit_attention_fusion(seg, labels, options=options)
    assert fusion.config["embedding_dims"] == {"audio": 0, "text": 6}
    seg["audio_embedding"] = [None] * len(seg)  # never read
    loaded = af.load_attention_fusion(fusion.save(tmp_path / "f.safetensors"))
    np.testing.assert_allclose(loaded.fuse(seg)[0], fusion.fuse(seg)[0], atol=1e-6)
