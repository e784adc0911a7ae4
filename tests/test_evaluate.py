"""The evaluation: group folds, cross-fitted fusion comparison, the report files, per-item predictions.

The fast tests use a synthetic table of branch outputs to test the comparison machinery only; the
slow ones run the real branches on real files.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from multimodal_ser import evaluation
from multimodal_ser.evaluation import systems as systems_module
from multimodal_ser.evaluation.cache import PredictionCache
from multimodal_ser.evaluation.items import BranchOutput, ItemPrediction
from multimodal_ser.evaluation.predict import prediction_table
from multimodal_ser.fusion import AttentionOptions
from multimodal_ser.grid import modality_table
from multimodal_ser.heads import MODELS_DIR
from multimodal_ser.labels import EMOTIONS

FAST_ATTENTION = AttentionOptions(width=16, heads=2, epochs=25, patience=5, batch_size=64)


def test_group_folds_never_put_a_group_on_both_sides():
    rng = np.random.default_rng(0)
    groups = rng.choice([f"speaker{i}" for i in range(13)], size=400)
    folds = evaluation.group_folds(groups, folds=5, seed=3)
    assert set(folds) == set(range(5))
    for g in set(groups):
        assert len(set(folds[groups == g])) == 1
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= np.bincount(np.unique(groups, return_inverse=True)[1]).max()
    np.testing.assert_array_equal(folds, evaluation.group_folds(groups, folds=5, seed=3))
    assert not np.array_equal(folds, evaluation.group_folds(groups, folds=5, seed=4))


def test_group_folds_refuse_too_few_groups():
    with pytest.raises(ValueError, match="at least 5 distinct groups, found 3"):
        evaluation.group_folds(["a", "b", "c", "a"], folds=5)
    with pytest.raises(ValueError, match="folds must be an int >= 2"):
        evaluation.group_folds(["a", "b"], folds=1)


def _probabilities(rng, targets, strength):
    logits = rng.normal(size=(len(targets), len(EMOTIONS)))
    logits[np.arange(len(targets)), targets] += strength
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def predictions():
    """A synthetic table of branch outputs: informative audio, uninformative text sometimes absent."""
    rng = np.random.default_rng(1)
    n = 240
    y = rng.integers(len(EMOTIONS), size=n)
    base = pd.DataFrame(
        {
            "path": [f"/clips/{i}.wav" for i in range(n)],
            "start": np.nan,
            "end": np.nan,
            "label": [EMOTIONS[i] for i in y],
            "group": [f"actor{i % 8}" for i in range(n)],
            "text": "Kids are talking by the door.",
            "text_source": "manifest",
        }
    )
    audio = modality_table("audio", _probabilities(rng, y, 2.0), np.ones(n, bool), rng.normal(size=(n, 10)).astype(np.float32))
    text_present = rng.random(n) < 0.9
    noise = _probabilities(rng, rng.integers(7, size=n), 2.0)
    text = modality_table("text", noise, text_present, rng.normal(size=(n, 4)).astype(np.float32))
    table = pd.concat([base, audio, text], axis=1)
    return evaluation.Predictions(table=table, failures=[{"path": "/clips/bad.wav", "line": 9, "reason": "MediaError: corrupt"}],
                                modalities=("audio", "text"), model_ids={"audio": {"voice": "test"}})


@pytest.fixture(scope="module")
def comparison(tmp_path_factory, predictions):
    out = tmp_path_factory.mktemp("comparison")
    result = evaluation.evaluate_predictions(predictions, out, folds=4, seed=0, by_group=True, by_presence=True, bootstrap=50,
                                           attention_options=FAST_ATTENTION)
    return result, out


def test_the_comparison_writes_the_documented_files_and_keys(comparison, predictions):
    result, tmp_path = comparison
    for name in ("metrics.json", "metrics.md", "comparison.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["systems"].keys() == result["systems"].keys() == {
        "audio", "text", "default:audio+text", "late_equal:audio+text", "late_learned:audio+text", "attention:audio+text"
    }
    for key in ("labels", "modalities", "n_items", "n_failed", "failures", "folds", "seed", "bootstrap", "n_groups",
                "fold_sizes", "models", "systems", "by_group", "runtime_s"):
        assert key in saved, key
    assert saved["n_items"] == 240 and saved["n_failed"] == 1 and saved["n_groups"] == 8
    for key, system in saved["systems"].items():
        for metric in ("name", "kind", "modalities", "n", "coverage", "ua", "ua_ci", "wa", "wa_ci", "macro_f1", "macro_f1_ci",
                       "confusion", "ece"):
            assert metric in system, (key, metric)
        assert system["ua_ci"][0] <= system["ua"] <= system["ua_ci"][1]
        assert np.asarray(system["confusion"]).sum() == system["n"]
    assert saved["systems"]["text"]["n"] == predictions.table["text_present"].sum() < 240
    assert saved["systems"]["late_learned:audio+text"]["coverage"] == 1.0
    assert "ece_uncalibrated" in saved["systems"]["late_learned:audio+text"]
    assert "ece_temperature_scaled" in saved["systems"]["late_equal:audio+text"]
    assert set(saved["by_group"]) == {f"actor{i}" for i in range(8)}
    presence = saved["by_presence"]
    assert set(presence) == {"audio", "audio+text"}
    assert presence["audio"]["n_items"] + presence["audio+text"]["n_items"] == 240
    assert presence["audio"]["systems"]["text"]["n"] == 0  # text alone says nothing where there is no text
    markdown = (tmp_path / "metrics.md").read_text()
    assert "| audio alone | 240 |" in markdown and "late fusion, learned here (audio+text)" in markdown
    assert "## What fusion adds" in markdown and "| attention fusion (audio+text) | audio alone | 240 |" in markdown
    assert "/clips/bad.wav" in markdown
    assert "Voice read against" not in markdown  # read as computed, nothing to say


def test_the_report_says_what_the_voice_was_read_against(comparison):
    from multimodal_ser.evaluation.report import markdown_report

    result = comparison[0]
    for reference, said in (("collection", "the mean of this manifest's items"), ({"file": "calls.npz", "sha256": "ab" * 32}, "`calls.npz`")):
        models = {**result["models"], "audio": {**result["models"].get("audio", {}), "reference": reference}}
        assert f"Voice read against {said}" in markdown_report({**result, "models": models})


def test_learned_fusions_ignore_the_noise_and_keep_up_with_the_informative_modality(comparison):
    systems = comparison[0]["systems"]
    weights = systems["late_learned:audio+text"]["parameters"]["weights_mean"]
    assert weights["text"] < 0.1 * weights["audio"]
    assert systems["late_equal:audio+text"]["ua"] < systems["audio"]["ua"] - 0.05  # equal weights are hurt by the noise
    assert systems["late_learned:audio+text"]["ua"] >= systems["audio"]["ua"] - 0.03
    assert systems["attention:audio+text"]["ua"] >= systems["audio"]["ua"] - 0.05
    gains = comparison[0]["gains"]
    assert set(gains) == {"default:audio+text", "late_equal:audio+text", "late_learned:audio+text", "attention:audio+text"}
    assert all(g["reference"] == "audio alone" for g in gains.values())
    learned = gains["late_learned:audio+text"]
    assert learned["ua_difference_ci"][0] <= learned["ua_difference"] <= learned["ua_difference_ci"][1]
    assert gains["late_equal:audio+text"]["ua_difference_ci"][1] < 0  # the noise costs the equal-weight fusion


@pytest.mark.parametrize("n_groups", [1, 2, 3])
def test_any_number_of_groups_is_scored(tmp_path, predictions, n_groups):
    table = predictions.table.assign(group=[f"actor{i % n_groups}" for i in range(len(predictions.table))])
    few = dataclasses.replace(predictions, table=table)
    result = evaluation.evaluate_predictions(few, tmp_path, folds=5, seed=0, bootstrap=10, attention_options=FAST_ATTENTION)
    systems = result["systems"]
    assert {"audio", "text", "default:audio+text", "late_equal:audio+text"} <= set(systems)
    assert systems["audio"]["ua"] > 0.5
    markdown = (tmp_path / "metrics.md").read_text()
    if n_groups == 1:
        assert result["folds"] is None and "late_learned:audio+text" not in systems and "attention:audio+text" not in systems
        assert "learned fusions need speakers to learn on" in markdown
    else:
        assert result["folds"] == n_groups and result["fold_sizes"] == [len(table) // n_groups] * n_groups
        assert "late_learned:audio+text" in systems and "leave-one-group-out" in markdown
        assert ("attention:audio+text" in systems) == (n_groups >= 3)


def test_whatever_is_learned_never_sees_the_groups_it_is_scored_on(tmp_path, predictions, monkeypatch):
    seen = []
    original = systems_module.fit_late_fusion

    def recording(segments, labels, **kwargs):
        seen.append(set(predictions.table.loc[segments.index, "group"]))
        return original(segments, labels, **kwargs)

    monkeypatch.setattr(systems_module, "fit_late_fusion", recording)
    evaluation.evaluate_predictions(predictions, tmp_path, folds=4, seed=2, bootstrap=10, fusions=("late_learned",))
    folds = evaluation.group_folds(predictions.table["group"], folds=4, seed=2)
    groups = predictions.table["group"].to_numpy()
    assert len(seen) == 4
    for f, trained_on in enumerate(seen):
        held_out = set(groups[folds == f])
        assert trained_on.isdisjoint(held_out) and trained_on | held_out == set(groups)


def test_options_are_validated(tmp_path, predictions):
    with pytest.raises(ValueError, match="bootstrap must be an int >= 1"):
        evaluation.evaluate_predictions(predictions, tmp_path, bootstrap=0)
    with pytest.raises(ValueError, match="fusions must be among"):
        evaluation.evaluate_predictions(predictions, tmp_path, fusions=("median",))
    with pytest.raises(ValueError, match="modalities must be distinct names"):
        evaluation.predict_manifest(tmp_path / "m.csv", modalities=("audio", "smell"))


# --- the real branches --------------------------------------------------------------------------


def _needs(*heads):
    missing = [h for h in heads if not (MODELS_DIR / h).is_file()]
    if missing:
        pytest.skip(f"packaged heads not trained yet: {missing}")


@pytest.mark.slow
@pytest.mark.models
def test_a_bad_item_is_reported_and_counted_not_fatal(tmp_path):
    _needs("text_head.safetensors")
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF not really a wave file" * 10)
    pd.DataFrame(
        {
            "path": ["corrupt.wav", "missing.wav", "transcript-only.wav"],
            "label": ["angry", "sad", "happy"],
            "text": ["", "", "What a wonderful day, I am so happy!"],
        }
    ).to_csv(tmp_path / "manifest.csv", index=False)
    predictions = evaluation.predict_manifest(tmp_path / "manifest.csv", modalities=("text",), use_cache=False, progress=False)
    assert [f["line"] for f in predictions.failures] == [2, 3]
    assert "corrupt.wav" in predictions.failures[0]["path"] and "MediaError" in predictions.failures[0]["reason"]
    assert "no such file" in predictions.failures[1]["reason"]
    table = predictions.table
    assert len(table) == 1 and table["text_present"].all() and table["text_source"].iloc[0] == "manifest"
    assert table["text_label"].iloc[0] == "happy"


@pytest.mark.slow
@pytest.mark.models
def test_real_ravdess_subset_end_to_end(tmp_path, shared_data):
    _needs("text_head.safetensors", "audio_head.safetensors")
    from multimodal_ser.evaluation.datasets import ravdess_manifest

    manifest = ravdess_manifest(shared_data / "ravdess-speech-16k")
    subset = manifest[manifest["actor"].isin([1, 2, 3, 4]) & (manifest["repetition"] == 1) & (manifest["intensity"] == "strong")]
    subset = subset.copy()
    subset.loc[subset.index[:2], "text"] = ""  # these two go through ASR of the same encoder pass
    subset.to_csv(tmp_path / "manifest.csv", index=False)
    result = evaluation.evaluate_manifest(
        tmp_path / "manifest.csv", tmp_path / "out", modalities=("audio", "text"), folds=2, bootstrap=20,
        language="en", use_cache=False, progress=False,
    )
    assert result["n_items"] == len(subset) and result["n_failed"] == 0
    assert result["text_sources"] == {"manifest": len(subset) - 2, "asr": 2}
    assert result["systems"]["audio"]["coverage"] == 1.0
    assert result["systems"]["audio"]["ua"] > 1 / 7
    assert (tmp_path / "out" / "comparison.png").is_file()
    # the packaged voice head was trained on these actors: the report says its scores are memory
    assert len(result["warnings"]) == 1 and f"{len(subset)} items are RAVDESS clips" in result["warnings"][0]
    assert "**Warning:**" in (tmp_path / "out" / "metrics.md").read_text()


@pytest.mark.slow
@pytest.mark.models
def test_train_fusion_on_a_small_real_mix_of_sources(tmp_path, shared_data):
    _needs("text_head.safetensors")
    from multimodal_ser.evaluation.datasets import folder_manifest, meld_manifest
    from multimodal_ser.fusion import load_attention_fusion, load_late_fusion
    from multimodal_ser.training.fusion import train_fusion

    meld = meld_manifest(shared_data / "meld", require_media=False)
    meld = meld[meld["split"] == "dev"].groupby("group").head(3).head(60)  # text only: the clips are not here
    fer = folder_manifest(shared_data / "fer2013" / "test", extensions={".jpg"}).groupby("label").head(8)  # face only
    pd.concat([meld, fer], ignore_index=True)[["path", "label", "group", "text"]].assign(
        source=["meld"] * len(meld) + ["fer2013"] * len(fer)
    ).to_csv(tmp_path / "mix.csv", index=False)
    summary = train_fusion(
        tmp_path / "mix.csv", tmp_path / "fusion.safetensors", modalities=("text", "face"), folds=2, bootstrap=10,
        images_are_face_crops=True, late_fusion_path=tmp_path / "late.json", progress=False,
        options=AttentionOptions(width=16, heads=2, epochs=10, patience=3),
    )
    assert summary["sha256"] is None  # outside the package: no checksum recorded
    fusion = load_attention_fusion(tmp_path / "fusion.safetensors")
    assert fusion.modalities == ("text", "face")
    assert fusion.config["trained_on"]["sources"]["meld"]["presence"] == {"text": len(meld)}
    late = load_late_fusion(tmp_path / "late.json")
    assert set(late.weights) == {"text", "face"}
    assert late.lapse == summary["late_fusion"]["lapse"]  # each branch's lapse, chosen on this mix, is saved
    card = (tmp_path / "fusion.md").read_text()
    assert "## Cross-fitted evaluation" in card and "Never seen: text+face" in card
    assert late.neutral_say == summary["late_fusion"]["neutral_say"]
    assert f"lapses text {late.lapse['text']:g}, face {late.lapse['face']:g}, the words' neutral say {late.neutral_say['text']:g}." in card


@pytest.mark.slow
@pytest.mark.models
def test_cli_scores_each_actor_with_a_voice_head_that_never_heard_them(tmp_path, shared_data, monkeypatch, capsys):
    """``mser evaluate --cross-fit-audio`` on a small real RAVDESS folder: heads trained without each
    actor, no memory warning; the packaged head on the same manifest is warned about."""
    _needs("text_head.safetensors", "audio_head.safetensors")
    from multimodal_ser.cli import main
    from multimodal_ser.evaluation.datasets import ravdess_manifest
    from multimodal_ser.heads import load_head

    monkeypatch.setenv("MSER_CACHE", str(tmp_path / "cache"))
    source = ravdess_manifest(shared_data / "ravdess-speech-16k")
    chosen = source[source["actor"].isin(range(1, 7)) & source["label8"].isin(["angry", "sad"])]
    chosen = chosen[(chosen["intensity"] == "strong") & (chosen["repetition"] == 1) & (chosen["statement"] == 1)]
    folder = tmp_path / "ravdess"
    for path in chosen["path"]:
        link = folder / path.split("/")[-2] / path.split("/")[-1]
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)
    assert main(["manifest", "ravdess", str(folder)]) == 0
    (tmp_path / "manifest.csv").write_text(capsys.readouterr().out)

    common = ["evaluate", "--manifest", str(tmp_path / "manifest.csv"), "--modalities", "audio,text", "--folds", "2",
              "--bootstrap", "20", "--language", "en", "--no-progress"]
    assert main(common + ["--out", str(tmp_path / "crossfit"), "--cross-fit-audio", str(folder)]) == 0
    result = json.loads((tmp_path / "crossfit" / "metrics.json").read_text())
    assert result["n_items"] == len(chosen) == 12 and result["warnings"] == []
    heads = result["models"]["audio"]["voice"]
    assert len(heads) == 5  # one head per fold of actors
    for head in heads:
        heard = load_head(head)[1]["training"]["ravdess_actors"]
        assert 4 <= len(heard) <= 5 and set(heard) < set(range(1, 7))
    assert "| audio alone | 12 |" in capsys.readouterr().out

    assert main(common + ["--out", str(tmp_path / "packaged")]) == 0
    assert "12 items are RAVDESS clips of speakers the packaged voice head was trained on" in capsys.readouterr().out


def test_a_video_face_keeps_its_quality_through_the_cache_and_the_table():
    p = np.full(len(EMOTIONS), 1 / len(EMOTIONS))
    branches = [BranchOutput(p, np.zeros(3, np.float32), 0.05), BranchOutput(), BranchOutput(p, np.zeros(3, np.float32))]
    assert [BranchOutput.from_arrays(b.arrays()).quality for b in branches] == [0.05, None, None]
    items = [ItemPrediction(index=i, group="g", kind="video", branches={"face": b}) for i, b in enumerate(branches)]
    manifest = pd.DataFrame({"path": ["a.mp4", "b.mp4", "c.jpg"], "label": ["happy"] * 3, "start": np.nan, "end": np.nan,
                             "group": ["g"] * 3, "text": [""] * 3})
    table = prediction_table(manifest, items, ("face",))
    np.testing.assert_array_equal(table["face_quality"].to_numpy(), [0.05, np.nan, 1.0])


def test_evaluation_gives_no_text_emotion_in_a_language_the_text_head_cannot_read():
    from types import SimpleNamespace

    from multimodal_ser.evaluation.predict import _text_branches

    def refuse(*_args, **_kwargs):
        raise AssertionError("nothing may be predicted or cached")

    models = SimpleNamespace(language="German", text=lambda: SimpleNamespace(languages=("en",), predict=refuse))
    items = [ItemPrediction(index=0, group=None, kind="none", text="Ich bin wütend.")]
    _text_branches(models, items, SimpleNamespace(get=refuse, put=refuse, key=refuse), {})
    assert not items[0].branches["text"].present


def test_an_item_heard_in_a_language_the_text_head_does_not_read_gets_no_text_emotion():
    """Without --language each item's language is detected: Urdu heard as Hindi is not read by an
    English head (the English item still is), and the warning names the languages."""
    from types import SimpleNamespace

    from multimodal_ser.evaluation.predict import _text_branches

    read = []

    def predict(texts):
        read.extend(texts)
        return SimpleNamespace(emotions=np.full((len(texts), 7), 1 / 7), embeddings=np.zeros((len(texts), 4)))

    models = SimpleNamespace(language=None, text=lambda: SimpleNamespace(languages=("en",), predict=predict))
    items = [
        ItemPrediction(index=0, group=None, kind="audio", text="आज मैं", text_source="asr", text_language="hi"),
        ItemPrediction(index=1, group=None, kind="audio", text="I am angry.", text_source="asr", text_language="en"),
        ItemPrediction(index=2, group=None, kind="audio", text="अरे", text_source="asr", text_language="hi"),
        ItemPrediction(index=3, group=None, kind="none", text="Fine, thanks.", text_source="manifest"),
    ]
    (warning,) = _text_branches(models, items, PredictionCache(None), {})
    assert read == ["Fine, thanks.", "I am angry."]
    assert [item.branches["text"].present for item in items] == [False, True, False, True]
    assert "2 items" in warning and "hi (2)" in warning


# --- the voice read against its collection -------------------------------------------------------------


def _spoken_items(n: int, width: int, seed: int = 0) -> list[ItemPrediction]:
    from multimodal_ser.evaluation.items import VoiceFeatures

    rng = np.random.default_rng(seed)
    return [ItemPrediction(index=i, group=f"s{i % 3}", kind="audio",
                           voice=VoiceFeatures(rng.standard_normal((1, width)).astype(np.float32), np.array([1.5])))
            for i in range(n)]


def test_the_voice_of_a_collection_is_read_against_the_mean_of_its_items(tmp_path):
    from head_factory import saved_voice_head

    from multimodal_ser import voice
    from multimodal_ser.errors import ModelError
    from multimodal_ser.evaluation.predict import _voice_branches
    from multimodal_ser.registry import Models

    models = Models()
    collection_head = saved_voice_head(tmp_path / "c.safetensors", "collection")
    width = models.voice(collection_head).head.n_features
    items = _spoken_items(voice.MIN_COLLECTION, width)
    rows = np.concatenate([item.voice.features for item in items])
    _voice_branches(models, items, {None: collection_head}, "collection")
    expected = models.voice(collection_head).predict_features(rows, collection=rows.mean(axis=0)).emotions
    np.testing.assert_allclose(np.stack([item.branches["audio"].probabilities for item in items]), expected, atol=1e-6)

    with pytest.raises(ValueError, match=f"at least {voice.MIN_COLLECTION} items"):
        _voice_branches(models, _spoken_items(voice.MIN_COLLECTION - 1, width), {None: collection_head}, "collection")
    plain_head = saved_voice_head(tmp_path / "p.safetensors", "none")
    with pytest.raises(ModelError, match="reads features against 'none'"):
        _voice_branches(models, _spoken_items(voice.MIN_COLLECTION, width), {None: plain_head}, "collection")

    # a saved reference (mser voice-reference) instead of the manifest's own mean
    from multimodal_ser.voice_reference import VoiceReference, save_reference

    saved = np.random.default_rng(3).standard_normal(width).astype(np.float32)
    path = save_reference(VoiceReference(saved, voice.MIN_COLLECTION, ["calls.wav"], voice.FEATURE_RECIPE), tmp_path / "calls.npz")
    few = _spoken_items(3, width)  # a saved reference reads even a handful of items
    rows = np.concatenate([item.voice.features for item in few])
    _voice_branches(models, few, {None: collection_head}, str(path))
    expected = models.voice(collection_head).predict_features(rows, collection=saved).emotions
    np.testing.assert_allclose(np.stack([item.branches["audio"].probabilities for item in few]), expected, atol=1e-6)
