"""The text branch: packaged encoder + head, predictions, the grid table, and the training helpers."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from multimodal_ser import grid, heads
from multimodal_ser.errors import ModelError
from multimodal_ser.labels import EMOTIONS, SENTIMENTS
from multimodal_ser.sentence_encoder import (
    PACKAGED_ENCODER_ID,
    PACKAGED_ENCODER_SHA256,
    WEIGHTS_FILE,
    packaged_encoder_path,
)
from multimodal_ser.text import DEFAULT_HEAD_PATH, TextEmotionModel, text_table

SENTENCES = [
    "I am so happy, this is wonderful!",
    "I miss her so much, I cried all night.",
    "Get out of my house right now, I am furious with you!",
    "I'm terrified, I think someone is following me.",
    "Wow, I can't believe it! Really? That's unexpected!",
    "The meeting is on Tuesday at ten.",
    "That is disgusting, it makes me want to vomit.",
]
EXPECTED = ["happy", "sad", "angry", "fearful", "surprised", "neutral", "disgust"]


@pytest.fixture(scope="module")
def model() -> TextEmotionModel:
    return TextEmotionModel()


@pytest.fixture(scope="module")
def prediction(model):
    return model.predict(SENTENCES)


@pytest.fixture
def minilm_head(tmp_path):
    """The packaged head without its tuned encoder layers: a head on the frozen all-MiniLM-L6-v2."""
    from multimodal_ser.text import split_head_tensors

    tensors, config = heads.load_head(DEFAULT_HEAD_PATH)
    config["encoder"] = {**config["encoder"], "id": PACKAGED_ENCODER_ID, "sha256": PACKAGED_ENCODER_SHA256, "tuned": False}
    return heads.save_head(tmp_path / "minilm.safetensors", split_head_tensors(tensors)[0], config)


def _linked_encoder(folder, *, weights: bytes | None = None):
    """A copy of the packaged encoder folder made of symlinks; ``weights`` replaces model.safetensors."""
    source = packaged_encoder_path()
    for item in source.rglob("*"):
        if item.is_file():
            target = folder / item.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            if item.name == WEIGHTS_FILE and weights is not None:
                target.write_bytes(weights)
            else:
                target.symlink_to(item)
    return folder


@pytest.mark.models
def test_packaged_head_is_verified_and_reported(model):
    ids = model.model_ids
    assert ids["text_head_sha256"] == heads.packaged_checksums()[DEFAULT_HEAD_PATH.name]
    assert ids["text_encoder_sha256"] == PACKAGED_ENCODER_SHA256  # all-MiniLM-L6-v2, fine-tuned from these weights
    assert ids["text_encoder"] == f"{PACKAGED_ENCODER_ID}, fine-tuned with the head"
    assert model.head_config["encoder"]["tuned"] and model.encoder.fingerprint != PACKAGED_ENCODER_SHA256
    assert DEFAULT_HEAD_PATH.stat().st_size < 5_000_000  # the six tuned layers as low-rank float16 changes, and the head


@pytest.mark.models
def test_corrupted_packaged_head_raises(tmp_path, monkeypatch):
    shutil.copy(DEFAULT_HEAD_PATH, tmp_path / DEFAULT_HEAD_PATH.name)
    shutil.copy(heads.CHECKSUMS_FILE, tmp_path / heads.CHECKSUMS_FILE.name)
    copy = tmp_path / DEFAULT_HEAD_PATH.name
    data = bytearray(copy.read_bytes())
    data[-10] ^= 0xFF  # a weight byte: the file still parses, only the checksum can tell
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(heads, "MODELS_DIR", tmp_path)
    monkeypatch.setattr(heads, "CHECKSUMS_FILE", tmp_path / heads.CHECKSUMS_FILE.name)
    with pytest.raises(ModelError, match="sha256"):
        TextEmotionModel(head_path=copy)


@pytest.mark.models
def test_truncated_user_head_raises(tmp_path):
    copy = tmp_path / "mine.safetensors"
    copy.write_bytes(DEFAULT_HEAD_PATH.read_bytes()[:1000])
    with pytest.raises(ModelError, match="safetensors"):
        TextEmotionModel(head_path=copy)


@pytest.mark.models
def test_user_head_path_works(tmp_path, model, prediction):
    copy = tmp_path / "mine.safetensors"
    shutil.copy(DEFAULT_HEAD_PATH, copy)
    mine = TextEmotionModel(head_path=copy)
    assert mine.model_ids["text_head"] == "mine.safetensors"
    np.testing.assert_allclose(mine.predict(SENTENCES[:2]).emotions, prediction.emotions[:2], atol=1e-6)


@pytest.mark.models
def test_head_for_another_encoder_is_refused(tmp_path):
    tensors, config = heads.load_head(DEFAULT_HEAD_PATH)
    config["encoder"] = {**config["encoder"], "id": "/somewhere/else", "sha256": "0" * 64}
    other = heads.save_head(tmp_path / "other.safetensors", tensors, config)
    with pytest.raises(ModelError, match="trained on encoder"):
        TextEmotionModel(head_path=other)


@pytest.mark.models
def test_user_encoder_folder_works(tmp_path, minilm_head):
    packaged = TextEmotionModel(head_path=minilm_head)
    assert packaged.model_ids["text_encoder"] == PACKAGED_ENCODER_ID
    folder = _linked_encoder(tmp_path / "encoder")
    mine = TextEmotionModel(encoder_path=folder, head_path=minilm_head)
    assert mine.model_ids["text_encoder"] == str(folder.resolve())
    np.testing.assert_allclose(mine.predict(SENTENCES[:2]).embeddings, packaged.predict(SENTENCES[:2]).embeddings, atol=1e-5)


@pytest.mark.models
def test_corrupted_encoder_weights_raise(tmp_path, minilm_head):
    folder = _linked_encoder(tmp_path / "encoder", weights=b"not the MiniLM weights")
    with pytest.raises(ModelError, match=f"expected {PACKAGED_ENCODER_SHA256}"):
        TextEmotionModel(encoder_path=folder, head_path=minilm_head)


@pytest.mark.models
def test_encoder_folder_without_weights_raises(tmp_path, minilm_head):
    (tmp_path / "encoder").mkdir()
    (tmp_path / "encoder" / "config.json").write_text("{}")
    with pytest.raises(ModelError, match=WEIGHTS_FILE):
        TextEmotionModel(encoder_path=tmp_path / "encoder", head_path=minilm_head)


@pytest.mark.models
def test_prediction_shapes_and_probabilities(prediction):
    n = len(SENTENCES)
    assert prediction.emotions.shape == (n, len(EMOTIONS))
    assert prediction.sentiment.shape == (n, len(SENTIMENTS))
    assert prediction.embeddings.shape == (n, 384)
    assert prediction.embeddings.dtype == np.float32
    np.testing.assert_allclose(prediction.emotions.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(prediction.sentiment.sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_allclose(np.linalg.norm(prediction.embeddings, axis=1), 1.0, atol=1e-5)
    assert (prediction.emotions >= 0).all() and (prediction.sentiment >= 0).all()


@pytest.mark.models
def test_clear_sentences_get_expected_emotion(prediction):
    predicted = [EMOTIONS[i] for i in prediction.emotions.argmax(axis=1)]
    assert predicted == EXPECTED


@pytest.mark.models
def test_clear_sentences_get_expected_sentiment(prediction):
    predicted = [SENTIMENTS[i] for i in prediction.sentiment.argmax(axis=1)]
    assert predicted[0] == "positive"
    assert predicted[1] == "negative" and predicted[2] == "negative"


@pytest.mark.models
def test_batching_keeps_input_order(model, prediction):
    in_threes = model.predict(SENTENCES, batch_size=3)
    np.testing.assert_allclose(in_threes.embeddings, prediction.embeddings, atol=1e-5)
    np.testing.assert_allclose(in_threes.emotions, prediction.emotions, atol=1e-5)


@pytest.mark.models
def test_predict_rejects_bad_input(model):
    with pytest.raises(TypeError, match="sequence of str"):
        model.predict("a bare string")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        model.predict(["fine", 3])
    with pytest.raises(ValueError, match="blank"):
        model.predict(["fine", "  "])
    with pytest.raises(ValueError, match="batch_size"):
        model.predict(["fine"], batch_size=0)


@pytest.mark.models
def test_predict_empty_list(model):
    empty = model.predict([])
    assert empty.emotions.shape == (0, 7) and empty.sentiment.shape == (0, 3) and empty.embeddings.shape == (0, 384)


@pytest.mark.models
def test_text_table_keeps_grid_rows_and_marks_blank_text_absent(model, prediction):
    texts = [SENTENCES[0], "", "   ", SENTENCES[2], None]
    g = grid.make_grid([0.0, 1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0, 5.0], texts=texts)
    table = text_table(g, model)
    assert len(table) == len(g)
    assert table.index.equals(g.index)
    assert table["text_present"].tolist() == [True, False, False, True, False]
    absent = table[~table["text_present"]]
    assert absent["text_label"].isna().all() and absent["sentiment"].isna().all()
    assert absent["text_confidence"].isna().all() and absent["text_embedding"].isna().all()
    for label in EMOTIONS:
        assert absent[f"text_{label}"].isna().all()
    for name in SENTIMENTS:
        assert absent[f"text_sentiment_{name}"].isna().all()
    present = table[table["text_present"]]
    probs = present[[f"text_{label}" for label in EMOTIONS]].to_numpy()
    np.testing.assert_allclose(probs, prediction.emotions[[0, 2]], atol=1e-5)
    assert present["text_label"].tolist() == ["happy", "angry"]
    assert present["sentiment"].tolist()[0] == "positive"
    assert all(len(e) == 384 for e in present["text_embedding"])
    sentiment = present[[f"text_sentiment_{name}" for name in SENTIMENTS]].to_numpy()
    np.testing.assert_allclose(sentiment.sum(axis=1), 1.0, atol=1e-9)


@pytest.mark.models
@pytest.mark.parametrize(
    "language, text",
    [("de", "Ich bin so wütend auf dich, raus aus meinem Haus!"), ("tr", "Çok mutluyum, bu harika bir gün!")],
)
def test_text_in_a_language_the_head_cannot_read_is_absent_with_the_reason(model, language, text):
    assert model.languages == ("en",)
    g = grid.make_grid([0.0, 1.0], [1.0, 2.0], texts=[text, ""])
    table = text_table(g, model, language=language)
    assert not table["text_present"].any()
    assert table["text_label"].isna().all() and table["sentiment"].isna().all()
    assert table["text_confidence"].isna().all()
    assert table["text_absent_reason"].tolist() == [f"language {language}: the text head reads en only", "no words"]


@pytest.mark.models
def test_english_text_gets_labels_and_no_absent_reason(model):
    g = grid.make_grid([0.0, 1.0], [1.0, 2.0], texts=[SENTENCES[0], ""])
    for language in ("en", None):  # None: the language is not known, the text is read
        table = text_table(g, model, language=language)
        assert table["text_present"].tolist() == [True, False]
        assert table["text_label"].tolist()[0] == "happy"
        assert table["text_absent_reason"].tolist() == [None, "no words"]


def test_language_names_become_codes():
    from multimodal_ser.asr import language_code

    assert [language_code(x) for x in ("de", "German", "turkish", "EN")] == ["de", "de", "tr", "en"]


@pytest.mark.models
def test_text_table_on_empty_grid(model):
    table = text_table(grid.empty_grid(), model)
    assert len(table) == 0
    expected = {"text_present", "text_label", "sentiment", "text_sentiment_positive", "text_embedding"}
    assert expected <= set(table.columns)


@pytest.mark.models
def test_text_table_needs_text_column(model):
    with pytest.raises(ValueError, match="'text' column"):
        text_table(pd.DataFrame({"start": [0.0], "end": [1.0]}), model)


# Training helpers, on the real corpora (no model needed).


def test_meld_validation_dialogues_are_seeded(shared_data):
    from multimodal_ser.training.text import MELD_VALIDATION_FRACTION, load_meld, meld_validation_dialogues

    meld = load_meld(shared_data, "train")
    ids = meld_validation_dialogues(meld.groups, seed=0)
    dialogues = set(meld.groups.tolist())
    assert set(ids) < dialogues
    assert len(ids) == round(MELD_VALIDATION_FRACTION * len(dialogues))
    assert meld_validation_dialogues(meld.groups, seed=0) == ids
    assert meld_validation_dialogues(meld.groups, seed=1) != ids


def test_goemotions_targets(shared_data):
    from multimodal_ser.training.text import load_goemotions

    test = load_goemotions(shared_data, "test")
    np.testing.assert_allclose(test.emotion.sum(axis=1), 1.0, atol=1e-6)
    multi = ~test.single_label
    assert 0 < multi.mean() < 0.2  # a minority of comments carry several Ekman labels
    neutral_only = test.emotion[:, EMOTIONS.index("neutral")] == 1.0
    assert (test.sentiment[neutral_only] == SENTIMENTS.index("neutral")).all()
    happy_only = test.emotion[:, EMOTIONS.index("happy")] == 1.0
    assert (test.sentiment[happy_only] == SENTIMENTS.index("positive")).all()


def test_class_weights_balance_the_classes():
    from multimodal_ser.training.text import class_weights

    targets = np.eye(3, dtype=np.float32)[[0] * 8 + [1, 2]]
    balanced = class_weights(targets, alpha=1.0)
    mass = targets.sum(axis=0) * balanced
    np.testing.assert_allclose(mass, mass[0])
    np.testing.assert_allclose(class_weights(targets, alpha=0.0), 1.0)


@pytest.mark.slow
@pytest.mark.models
def test_head_beats_lexicon_on_goemotions_test_subset(shared_data, model):
    pytest.importorskip("nrclex")
    from multimodal_ser.training.text import LexiconBaseline, evaluate_predictions, load_goemotions

    test = load_goemotions(shared_data, "test")
    keep = np.flatnonzero(test.single_label)[:800]
    subset = test.subset(np.isin(np.arange(len(test)), keep), "goemotions/test[:800 single]")
    pred = model.predict(subset.texts)
    head = evaluate_predictions(subset, pred.emotions.argmax(axis=1), pred.sentiment.argmax(axis=1))
    lexicon = LexiconBaseline().evaluate(subset)
    assert head["emotion"]["macro_f1"] > lexicon["emotion"]["macro_f1"] + 0.1
    assert head["emotion"]["wa"] > 0.5
    assert head["sentiment"]["weighted_f1"] > lexicon["sentiment"]["weighted_f1"]


@pytest.mark.models
def test_the_packaged_head_applies_the_temperatures_it_stores(model, prediction):
    stored = model.head_config["calibration"]
    assert model.temperature == pytest.approx(stored["temperature"])
    assert model.sentiment_temperature == pytest.approx(stored["sentiment_temperature"])
    assert len(stored["prior"]) == len(EMOTIONS) and sum(stored["prior"]) == pytest.approx(1.0)
    raw = TextEmotionModel(calibrated=False).predict(SENTENCES)
    np.testing.assert_array_equal(raw.emotions.argmax(axis=1), prediction.emotions.argmax(axis=1))
    assert not np.allclose(raw.sentiment, prediction.sentiment)  # sentiment T = 1.14 visibly softens


def test_dialogue_context_reads_only_earlier_turns_of_the_same_dialogue():
    from multimodal_ser.text import dialogue_context, head_features

    e = np.eye(5, dtype=np.float32)
    dialogues = [7, 7, 3, 7, 7]
    ctx = dialogue_context(e, dialogues, turns=2, decay=0.5)
    np.testing.assert_allclose(ctx[0], 0.0)  # a dialogue's first turn has no context
    np.testing.assert_allclose(ctx[1], e[0])
    np.testing.assert_allclose(ctx[2], 0.0)  # another dialogue
    np.testing.assert_allclose(ctx[3], (e[1] + 0.5 * e[0]) / 1.5)
    np.testing.assert_allclose(ctx[4], (e[3] + 0.5 * e[1]) / 1.5)  # two turns back at most
    assert head_features(e, None, None) is e
    alone = head_features(e, None, {"turns": 2, "decay": 0.5})
    assert alone.shape == (5, 10) and not alone[:, 5:].any()
    np.testing.assert_allclose(head_features(e, dialogues, {"turns": 2, "decay": 0.5})[:, 5:], ctx)
    with pytest.raises(ValueError, match="one id per embedding"):
        dialogue_context(e, [1, 2], turns=2, decay=0.5)
    with pytest.raises(ValueError, match="turns must be"):
        dialogue_context(e, dialogues, turns=0, decay=0.5)



@pytest.mark.models
def test_a_head_with_context_reads_each_segment_with_the_turns_before_it(tmp_path, model):
    import torch

    config = {**model.head_config, "context": {"turns": 2, "decay": 0.5}}
    torch.manual_seed(0)
    head = heads.MLPHead(2 * 384, len(EMOTIONS) + len(SENTIMENTS), hidden=config["hidden"], dropout=config["dropout"])
    path = heads.save_head(tmp_path / "context.safetensors", head.state_dict(), config)
    with_context = TextEmotionModel(head_path=path, calibrated=False)
    assert with_context.context == {"turns": 2, "decay": 0.5}
    texts = [SENTENCES[0], "", SENTENCES[1], SENTENCES[2]]
    table = text_table(grid.make_grid([0.0, 1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0], texts=texts), with_context)
    probs = table.loc[table["text_present"], [f"text_{label}" for label in EMOTIONS]].to_numpy()
    in_dialogue = with_context.predict([SENTENCES[0], SENTENCES[1], SENTENCES[2]], dialogues=[0, 0, 0]).emotions
    alone = with_context.predict([SENTENCES[0], SENTENCES[1], SENTENCES[2]]).emotions
    np.testing.assert_allclose(probs, in_dialogue, atol=1e-6)  # the blank row is no one's context
    np.testing.assert_allclose(probs[0], alone[0], atol=1e-6)  # the first turn has no context
    assert not np.allclose(probs[1:], alone[1:], atol=1e-4)


@pytest.mark.models
def test_a_fine_tuned_head_carries_its_encoder_weights(tmp_path, minilm_head):
    import torch

    from multimodal_ser.sentence_encoder import LowRankDelta
    from multimodal_ser.text import split_head_tensors, tuned_file_tensors

    tensors, config = heads.load_head(minilm_head)
    frozen = TextEmotionModel(head_path=minilm_head, calibrated=False)
    state = frozen.encoder.model.state_dict()
    whole, changed = "encoder.layer.5.output.LayerNorm.weight", "encoder.layer.5.output.dense.weight"
    generator = torch.Generator().manual_seed(0)
    target = state[changed] + 0.05 * torch.randn(384, 2, generator=generator) @ torch.randn(2, 1536, generator=generator)
    delta = LowRankDelta.between(target, state[changed], 2).quantized()
    stored = tuned_file_tensors({whole: state[whole] * 0.5, changed: delta})
    assert sorted(stored) == sorted([f"encoder.{changed}.delta_{p}" for p in ("up", "scale", "down")] + [f"encoder.{whole}"])
    assert stored[f"encoder.{whole}"].dtype == torch.float16 and stored[f"encoder.{changed}.delta_up"].dtype == torch.int8
    config["encoder"] = {**config["encoder"], "tuned": True}
    path = heads.save_head(tmp_path / "tuned.safetensors", {**tensors, **stored}, config)
    head_part, tuned_part, int8_part = split_head_tensors(heads.load_head(path)[0])
    assert set(head_part) == set(tensors) and set(tuned_part) == {changed, whole} and not int8_part
    assert isinstance(tuned_part[changed], LowRankDelta) and tuned_part[whole].dtype == torch.float32
    tuned = TextEmotionModel(head_path=path, calibrated=False)
    loaded = tuned.encoder.model.state_dict()
    torch.testing.assert_close(loaded[whole], (state[whole] * 0.5).half().float())
    torch.testing.assert_close(loaded[changed], delta.applied_to(state[changed]))
    assert (loaded[changed] - target).abs().max() < 0.01 * (target - state[changed]).abs().max()  # int8 keeps the change
    assert tuned.model_ids["text_encoder"] == f"{PACKAGED_ENCODER_ID}, fine-tuned with the head"
    assert tuned.model_ids["text_encoder_sha256"] == PACKAGED_ENCODER_SHA256  # the weights it was tuned from
    assert tuned.encoder.fingerprint != frozen.encoder.fingerprint == PACKAGED_ENCODER_SHA256  # cached embeddings never mix
    assert not np.allclose(tuned.predict(SENTENCES[:2]).embeddings, frozen.predict(SENTENCES[:2]).embeddings, atol=1e-3)


@pytest.mark.models
def test_a_head_with_int8_ranges_runs_its_encoder_in_int8(tmp_path, minilm_head):
    from multimodal_ser.text import INT8_PREFIX, split_head_tensors

    tensors, config = heads.load_head(minilm_head)
    frozen = TextEmotionModel(head_path=minilm_head, calibrated=False)
    ranges = frozen.encoder.int8_calibration(SENTENCES)  # all-MiniLM-L6-v2: its feed-forward's first layers
    assert sorted(ranges) == [f"encoder.layer.{k}.intermediate.dense" for k in range(6)]
    config["encoder"] = {**config["encoder"], "int8": {"alpha": 0.8}}
    path = heads.save_head(tmp_path / "int8.safetensors", {**tensors, **{INT8_PREFIX + k: v for k, v in ranges.items()}}, config)
    head_part, _, int8_part = split_head_tensors(heads.load_head(path)[0])
    assert set(head_part) == set(tensors) and int8_part.keys() == ranges.keys()
    int8 = TextEmotionModel(head_path=path, calibrated=False)
    assert int8.model_ids["text_encoder"].endswith(", int8") and int8.encoder.fingerprint != frozen.encoder.fingerprint
    a, b = int8.predict(SENTENCES), frozen.predict(SENTENCES)
    assert np.min(np.sum(a.embeddings * b.embeddings, axis=1)) > 0.98
    assert not np.array_equal(a.embeddings, b.embeddings)  # it does run another path


@pytest.mark.models
def test_tuned_tensors_that_are_not_the_encoders_are_refused(tmp_path, minilm_head):
    import torch

    tensors, config = heads.load_head(minilm_head)
    path = heads.save_head(tmp_path / "foreign.safetensors", {**tensors, "encoder.layer.9.output.dense.weight": torch.zeros(384, 1536)}, config)
    with pytest.raises(ModelError, match=r"layer\.9.*not this encoder's"):
        TextEmotionModel(head_path=path)
    key = "encoder.layer.0.output.dense.weight"
    misfit = {f"{key}.delta_up": torch.zeros(384, 4), f"{key}.delta_scale": torch.zeros(4), f"{key}.delta_down": torch.zeros(4, 384)}
    path = heads.save_head(tmp_path / "misfit.safetensors", {**tensors, **misfit}, config)
    with pytest.raises(ModelError, match=r"layer\.0\.output\.dense\.weight.*not this encoder's"):
        TextEmotionModel(head_path=path)  # a (384, 384) change to a (384, 1536) matrix
    path = heads.save_head(tmp_path / "part.safetensors", {**tensors, f"{key}.delta_up": misfit[f"{key}.delta_up"]}, config)
    with pytest.raises(ModelError, match=r"part\.safetensors: .*delta_up lacks its other parts"):
        TextEmotionModel(head_path=path)


def test_a_low_rank_delta_is_the_best_approximation_of_the_change():
    import torch

    from multimodal_ser.sentence_encoder import LowRankDelta

    generator = torch.Generator().manual_seed(0)
    base = torch.randn(40, 30, generator=generator)
    change = torch.randn(40, 3, generator=generator) @ torch.randn(3, 30, generator=generator)
    exact = LowRankDelta.between(base + change, base, 3)
    assert exact.up.shape == (40, 3) and exact.scale.shape == (3,) and exact.down.shape == (3, 30) and exact.shape == base.shape
    torch.testing.assert_close(exact.applied_to(base), base + change, atol=1e-4, rtol=1e-4)
    singular = torch.linalg.svdvals(change)
    residual = LowRankDelta.between(base + change, base, 1).applied_to(base) - (base + change)
    assert residual.norm().item() == pytest.approx(singular[1:].norm().item(), rel=1e-3)  # Eckart-Young: nothing better
    small = exact.quantized()
    assert small.up.dtype == small.down.dtype == torch.int8 and small.scale.dtype == torch.float32
    assert small.up.abs().amax(dim=0).tolist() == [127] * 3 and small.down.abs().amax(dim=1).tolist() == [127] * 3
    error = (small.applied_to(base) - (base + change)).norm() / change.norm()
    assert 0 < error < 0.01  # a byte a number loses well under 1% of the change


def test_fine_tuning_batches_cover_every_row_once_in_like_lengths():
    from multimodal_ser.training.text.finetune import BATCH_SIZE, LENGTH_POOL, length_batches

    lengths = np.random.default_rng(1).integers(3, 60, size=BATCH_SIZE * LENGTH_POOL + 77)
    batches = length_batches(lengths, np.random.default_rng(0))
    rows = np.concatenate(batches)
    assert sorted(rows.tolist()) == list(range(len(lengths)))
    assert all(len(b) <= BATCH_SIZE for b in batches)
    assert all(np.all(np.diff(lengths[b]) >= 0) for b in batches)  # each batch is cut from a length-sorted pool
    spread = np.mean([np.ptp(lengths[b]) for b in batches if len(b) == BATCH_SIZE])
    assert spread < 0.2 * np.ptp(lengths)


def test_fine_tuning_rows_draw_a_part_afresh_each_epoch_and_keep_its_share_of_the_loss():
    from multimodal_ser.training.text.corpora import TextSet, one_hot
    from multimodal_ser.training.text.finetune import text_rows

    def labelled(name, n):
        return TextSet(name, [f"{name} {i}" for i in range(n)], one_hot(["neutral"] * n), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64))

    big, small = labelled("big", 100), labelled("small", 20)
    rows = text_rows([(big, 1.0, 10), (small, 3.0, None)])
    assert rows.epoch_size == 30 and len(rows.texts) == 120
    rng = np.random.default_rng(0)
    first, second = rows.epoch(rng), rows.epoch(rng)
    for epoch in (first, second):
        assert len(epoch) == len(set(epoch.tolist())) == 30 and set(range(100, 120)) <= set(epoch.tolist())
        assert rows.weight[epoch].mean().item() == pytest.approx(1.0)  # an epoch's rows average 1
        assert rows.weight[epoch[:10]].sum().item() / rows.weight[epoch].sum().item() == pytest.approx(100 / 160)  # big: 100 x 1 of 100 x 1 + 20 x 3
    assert set(first[:10].tolist()) != set(second[:10].tolist())  # drawn afresh
    whole = text_rows([(big, 1.0, None), (small, 3.0, None)])
    assert whole.epoch(rng).tolist() == list(range(120)) and whole.weight.mean().item() == pytest.approx(1.0)  # as before draws existed
    assert text_rows([(big, 1.0, 500)]).epoch_size == 100  # a draw larger than the part reads it whole


@pytest.mark.models
def test_fine_tuning_trains_the_encoder_layers_and_keeps_the_best_state(monkeypatch):
    import torch

    from multimodal_ser.sentence_encoder import SentenceEncoder
    from multimodal_ser.training.text import finetune
    from multimodal_ser.training.text.corpora import TextSet, one_hot

    monkeypatch.setattr(finetune, "EPOCHS", 2)
    monkeypatch.setattr(finetune, "BATCH_SIZE", 4)  # 14 rows: 4 steps an epoch, evaluated every 2
    labelled = TextSet("hand-labelled", SENTENCES, one_hot(EXPECTED), np.array([2, 0, 0, 0, 1, 1, 0]), np.zeros(7, dtype=np.int64))
    rows = finetune.text_rows([(labelled, 1.0, None), (labelled, 3.0, None)])
    assert rows.weight.mean().item() == pytest.approx(1.0) and rows.weight[7] == pytest.approx(3 * rows.weight[0])
    encoder = SentenceEncoder()
    before = {k: v.clone() for k, v in encoder.model.state_dict().items()}
    head, tuned, result = finetune.fine_tune(encoder, rows, {"goemotions": labelled, "meld": labelled}, seed=0)
    assert set(tuned) and not any(k.startswith("embeddings.") for k in tuned)  # the word embeddings stay frozen
    assert all(k.startswith("encoder.layer.") for k in tuned)
    assert any(not torch.equal(tuned[k], before[k]) for k in tuned)
    assert len(result["curve"]) == 2 * finetune.EVALS_PER_EPOCH and result["score"] == max(c["score"] for c in result["curve"])
    torch.testing.assert_close(encoder.model.state_dict()[next(iter(tuned))], tuned[next(iter(tuned))])
    assert not head.training and not encoder.model.training
    stored = finetune.compact(tuned, before)
    assert stored.keys() == tuned.keys()
    for key, value in stored.items():  # matrices as rank-DELTA_RANK changes in int8, the rest whole
        if tuned[key].ndim == 2:
            assert value.up.shape[1] == finetune.DELTA_RANK and value.up.dtype == torch.int8
        else:
            torch.testing.assert_close(value, tuned[key], atol=1e-2, rtol=1e-3)


def test_held_out_scores_carry_intervals_around_the_score():
    from multimodal_ser.training.text.corpora import TextSet, one_hot
    from multimodal_ser.training.text.scoring import held_out_scores

    rng = np.random.default_rng(0)
    labels = [EMOTIONS[i] for i in rng.integers(0, 7, size=200)]
    data = TextSet("dialogues", ["x"] * 200, one_hot(labels), rng.integers(0, 3, size=200), np.repeat(np.arange(20), 10))
    truth = data.emotion.argmax(axis=1)
    guess = np.where(rng.random(200) < 0.6, truth, rng.integers(0, 7, size=200))
    result = held_out_scores(data, guess, data.sentiment)
    for name in ("macro_f1", "weighted_f1", "ua"):
        low, high = result["emotion"][f"{name}_ci"]
        assert low < result["emotion"][name] < high
    assert result["sentiment"]["macro_f1"] == 1.0 and result["sentiment"]["macro_f1_ci"] == [1.0, 1.0]
    absent = np.array([EMOTIONS.index(label) for label in labels]) != 0  # a set without neutral (as DAIR)
    subset = data.subset(absent, "no neutral")
    guessed = np.where(rng.random(absent.sum()) < 0.3, 0, subset.emotion.argmax(axis=1))  # some predicted neutral
    low, high = held_out_scores(subset, guessed, subset.sentiment)["emotion"]["macro_f1_ci"]
    assert low < held_out_scores(subset, guessed, subset.sentiment)["emotion"]["macro_f1"] < high


def _text_corpora_slice(source, target, rows: int):
    """The first ``rows`` rows of each file ``train_text_head`` reads from ``source`` (the real
    corpora), in the same formats under ``target`` (labels files whole)."""
    from multimodal_ser.training.text.corpora import REQUIRED_FILES

    for name in REQUIRED_FILES:
        src, dst = source / name, target / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".csv"):
            pd.read_csv(src).head(rows).to_csv(dst, index=False)
        else:
            lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
            dst.write_text("".join(lines if name.endswith("labels.txt") else lines[:rows]), encoding="utf-8")
    return target


@pytest.mark.slow
@pytest.mark.models
@pytest.mark.parametrize("encoder", ["minilm-tuned", "mpnet-tuned"])
def test_train_text_fine_tunes_and_stores_the_layers_as_low_rank_changes(tmp_path, monkeypatch, shared_data, encoder):
    """`mser train text` end to end on a slice of the real corpora, one epoch: the file it writes
    carries int8 rank-DELTA_RANK changes of the encoder's (kept) layers, loads, and is scored and
    carded through them."""
    import dataclasses

    import torch

    from multimodal_ser.sentence_encoder import LowRankDelta
    from multimodal_ser.text import INT8_PREFIX, split_head_tensors
    from multimodal_ser.training.text import finetune, train, train_text_head

    if encoder == "mpnet-tuned":
        monkeypatch.setitem(train.TUNED_ENCODERS, encoder, dataclasses.replace(train.TUNED_ENCODERS[encoder], goemotions_per_epoch=100))
    monkeypatch.setenv("MSER_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(finetune, "EPOCHS", 1)
    data = _text_corpora_slice(shared_data, tmp_path / "data", rows=240)
    out, card = tmp_path / "head.safetensors", tmp_path / "head.md"
    metrics = train_text_head(data, out, card_path=card, seed=0, encoder=encoder)

    tensors, config = heads.load_head(out)
    _, tuned, _ = split_head_tensors(tensors)
    deltas = [v for v in tuned.values() if isinstance(v, LowRankDelta)]
    layers = train.TUNED_ENCODERS[encoder].layers or 6  # MiniLM whole: six
    assert len(deltas) == 6 * layers and all(d.up.dtype == torch.int8 and d.scale.shape == (finetune.DELTA_RANK,) for d in deltas)
    assert len(tuned) - len(deltas) == 10 * layers  # the kept layers' biases and layer norms, whole
    assert config["encoder"]["tuned"] and config["training"]["fixed"]["delta_rank"] == finetune.DELTA_RANK
    stored = config["metrics"]["validation"]["stored"]
    assert 0 <= stored["score"] <= 1 and set(stored) >= {"goemotions_macro_f1", "meld_weighted_f1"}
    assert config["calibration"]["temperature"] > 0 and metrics["meld_dev"]["head"]["emotion"]["n"] > 0
    model = TextEmotionModel(head_path=out)
    int8 = train.TUNED_ENCODERS[encoder].int8
    assert model.encoder.id.endswith("fine-tuned with the head" + (", int8" if int8 else ""))
    assert model.predict(SENTENCES[:2]).emotions.shape == (2, 7)
    assert model.encoder.layers == config["encoder"]["layers"] == layers
    text = card.read_text(encoding="utf-8")
    assert f"rank-{finetune.DELTA_RANK} changes in int8" in text and f"scores {stored['score']:.3f}" in text
    assert f"--encoder {encoder}" in text
    assert bool(config["encoder"]["int8"]) == int8 == ("run in int8" in text)
    if encoder == "mpnet-tuned":  # the first 10 of 12 layers in int8; GoEmotions drawn, 100 comments an epoch
        assert model.encoder.id.endswith("first 10 of 12 layers, fine-tuned with the head, int8") and model.encoder.dim == 768
        assert sorted(model.encoder.int8_ranges) == sorted(k.removeprefix(INT8_PREFIX) for k in tensors if k.startswith(INT8_PREFIX))
        assert len(model.encoder.int8_ranges) == 5 * layers  # query, key, value, attention output, feed-forward in
        assert config["training"]["training_sets"]["goemotions/train"]["per_epoch"] == 100 and "100 drawn afresh each epoch" in text
