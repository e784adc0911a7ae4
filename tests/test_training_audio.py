"""How the voice head's training clips are laid out for the encoder: conditions, packing, isolation."""

from __future__ import annotations

import numpy as np
import pytest

from multimodal_ser.encoder import WINDOW_SAMPLES
from multimodal_ser.media import SAMPLE_RATE
from multimodal_ser.training import audio


@pytest.mark.parametrize("name", ["clean", "isolated", "telephone", "white@10dB", "babble@0dB", "pitch@+2st", "pitch@-1.5st", "tempo@x0.9"])
def test_condition_names_round_trip(name):
    assert audio.Condition.parse(name).name == name


@pytest.mark.parametrize("name", ["", "noisy", "white", "white@10", "isolated@3dB", "tempo@x3", "clean@1dB", "telephone@8kHz"])
def test_bad_condition_names_are_refused(name):
    with pytest.raises(ValueError):
        audio.Condition.parse(name)


def test_the_shipped_recipe_trains_on_isolated_noisy_and_telephone_clips_too():
    assert [c.name for c in audio.augment_conditions(audio.RECIPE)] == ["isolated", "telephone"]
    recipe = audio.HeadRecipe(augment=("isolated",))
    isolated = np.ones((4, 3))
    isolated[3] = np.nan  # a clip not encoded alone
    features = {"clean": np.zeros((4, 3)), "isolated": isolated}
    x, y = audio.training_rows(features, recipe, np.array([True, False, True, True]), np.arange(4))
    assert x.shape == (5, 3) and list(x[:, 0]) == [0, 0, 0, 1, 1] and list(y) == [0, 2, 3, 0, 2]


@pytest.fixture(scope="module")
def corpus(shared_data):
    from multimodal_ser.evaluation.datasets import ravdess_manifest

    folder = shared_data / "ravdess-speech-16k"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    manifest = ravdess_manifest(folder)
    return audio.Corpus.load(manifest[manifest["actor"].isin([1, 2]) & (manifest["statement"] == 1)].reset_index(drop=True))


def test_packed_windows_hold_one_actor_and_fit_the_encoder(corpus):
    windows = audio.pack_windows(corpus, seed=0)
    placed = [p for window in windows for p in window]
    assert sorted(p.index for p in placed) == list(range(len(corpus.audios)))  # every clip once
    for window in windows:
        assert len({corpus.groups[p.index] for p in window}) == 1
        end = window[-1].at + window[-1].last - window[-1].first
        assert end <= WINDOW_SAMPLES
        for p in window:
            start, stop = p.segment
            assert p.at / SAMPLE_RATE <= start < stop <= (p.at + p.last - p.first) / SAMPLE_RATE
    assert audio.pack_windows(corpus, seed=0) == windows and audio.pack_windows(corpus, seed=1) != windows


@pytest.mark.models
def test_isolated_windows_hold_each_whole_clip_with_its_speech(corpus):
    windows = audio.isolated_windows(corpus)
    assert len(windows) == len(corpus.audios)
    for i, (window, clip) in enumerate(zip(windows, corpus.audios)):
        (p,) = window
        assert (p.index, p.first, p.last, p.at) == (i, 0, len(clip), 0)
        start, stop = p.segment
        first, last = corpus.speech[i]  # where the energy trim finds speech
        assert 0 <= start < stop <= len(clip) / SAMPLE_RATE
        assert start < last / SAMPLE_RATE and stop > first / SAMPLE_RATE  # the detector found the same speech
        assert stop - start > 0.5 * (last - first) / SAMPLE_RATE
    rendered = audio.render_window(windows[0], corpus, audio.Condition(audio.ISOLATED), seed=0)
    np.testing.assert_array_equal(rendered, corpus.audios[0])


def test_a_four_class_corpus_labels_only_its_own_classes():
    """TurEV-DB's calm and URDU's neutral stand for {neutral, calm}; RAVDESS keeps them apart;
    no four-class clip may speak about fearful, disgust or surprised."""
    from multimodal_ser.labels import RAVDESS_8

    label8 = ["calm", "angry", "neutral", "sad", "neutral", "calm", "fearful"]
    corpus = ["turev-db", "turev-db", "urdu", "urdu", "ravdess", "ravdess", "ravdess"]
    targets, allowed = audio.label_sets(label8, corpus)
    names = lambda row: {RAVDESS_8[i] for i in np.flatnonzero(row)}  # noqa: E731
    assert names(targets[0]) == {"neutral", "calm"} and names(targets[1]) == {"angry"}
    assert names(targets[2]) == {"neutral", "calm"} and names(targets[4]) == {"neutral"} and names(targets[5]) == {"calm"}
    assert names(allowed[0]) == {"neutral", "calm", "angry"}  # the turev clips here use calm and angry only
    assert names(allowed[2]) == {"neutral", "calm", "sad"}
    assert names(allowed[6]) == {"neutral", "calm", "fearful"}


def test_the_loss_gives_classes_a_corpus_lacks_no_gradient():
    import torch

    from multimodal_ser.training.audio.head import _set_loss

    logits = torch.randn(2, 8, requires_grad=True)
    targets = torch.zeros(2, 8, dtype=torch.bool)
    targets[0, [0, 1]] = True  # {neutral, calm}
    targets[1, 4] = True  # angry
    allowed = torch.zeros(2, 8, dtype=torch.bool)
    allowed[:, [0, 1, 2, 3, 4]] = True  # a four-class corpus: no fearful, disgust, surprised
    _set_loss(logits, targets, allowed, 0.1).sum().backward()
    assert torch.all(logits.grad[:, 5:] == 0)
    assert torch.all(logits.grad[:, :5].abs().sum(dim=1) > 0)
    # a set target is satisfied by mass on either member: moving mass from neutral to calm costs nothing
    a = torch.tensor([[5.0, 0, 0, 0, 0, 0, 0, 0]])
    b = torch.tensor([[0, 5.0, 0, 0, 0, 0, 0, 0]])
    assert torch.allclose(_set_loss(a, targets[:1], allowed[:1], 0.0), _set_loss(b, targets[:1], allowed[:1], 0.0))


def test_corpora_weigh_the_same_whatever_their_size():
    w = audio.head.corpus_weights(["a"] * 30 + ["b"] * 10)
    assert np.isclose(w[:30].sum(), w[30:].sum()) and np.isclose(w.mean(), 1.0)


def test_speaker_folds_never_split_a_speaker_and_mix_the_corpora():
    import pandas as pd

    manifest = pd.DataFrame({
        "speaker": [f"ravdess:{i:02d}" for i in range(1, 11) for _ in range(3)] + [f"urdu:SM{i}" for i in range(5) for _ in range(2)],
        "corpus": ["ravdess"] * 30 + ["urdu"] * 10,
        "sex": [("male" if i % 2 else "female") for i in range(1, 11) for _ in range(3)] + ["male"] * 10,
    })
    folds = audio.speaker_folds(manifest, folds=5, seed=0)
    flat = [s for f in folds for s in f]
    assert sorted(flat) == sorted(manifest["speaker"].unique())  # every speaker in exactly one fold
    for fold in folds:
        assert {s.split(":")[0] for s in fold} == {"ravdess", "urdu"}
    with pytest.raises(ValueError, match="folds"):
        audio.speaker_folds(manifest, folds=1, seed=0)


def test_telephone_channel_keeps_the_length_and_removes_the_wide_band():
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(SAMPLE_RATE)).astype(np.float32)
    phone = audio.telephone_channel(noise)
    assert phone.shape == noise.shape and phone.dtype == np.float32
    spectrum = np.abs(np.fft.rfft(phone)) ** 2
    freqs = np.fft.rfftfreq(len(phone), 1 / SAMPLE_RATE)
    in_band = spectrum[(freqs > 500) & (freqs < 3000)].mean()
    assert spectrum[freqs > 4500].mean() < 1e-3 * in_band
    assert spectrum[freqs < 100].mean() < 0.1 * in_band


@pytest.fixture(scope="module")
def three_small_corpora(shared_data, tmp_path_factory):
    """A data folder with a few speakers of each corpus (links to the real clips)."""
    root = tmp_path_factory.mktemp("corpora")
    picks = {  # (which files, keep every k-th)
        "ravdess-speech-16k": (lambda p: p.parent.name in ("Actor_01", "Actor_02") and p.name.split("-")[4:6] == ["01", "01"], 1),
        "turev-db-16k": (lambda p: p.name.split("_")[0] in ("1157", "1234"), 15),
        "urdu-16k": (lambda p: p.name.split("_")[0] in ("SM1", "SF4", "SF5"), 1),
    }
    for folder, (keep, every) in picks.items():
        if not (shared_data / folder).is_dir():
            pytest.skip(f"{shared_data / folder} not found")
        for path in sorted((shared_data / folder).rglob("*.flac"))[::every]:
            if keep(path):
                link = root / folder / path.relative_to(shared_data / folder)
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(path)
    return root


@pytest.mark.slow
@pytest.mark.models
def test_cross_validation_and_leave_one_corpus_out_on_real_corpora(three_small_corpora, tmp_path, monkeypatch):
    """Both protocols run end to end on real clips of three corpora, keep speakers (or corpora) apart,
    calibrate, and report every corpus with the angry false-alarm rate."""
    monkeypatch.setenv("MSER_CACHE", str(tmp_path / "cache"))
    recipe = audio.HeadRecipe(epochs=5, lbfgs_iterations=20)
    cv = audio.cross_validate_audio(three_small_corpora, folds=2, recipe=recipe, n_resamples=10)
    speakers = [s for fold in cv["folds"] for s in fold]
    assert len(speakers) == len(set(speakers)) == 2 + 2 + 3
    assert set(cv["results"]) == {"ravdess", "turev-db", "urdu"}
    assert 0.05 <= cv["temperature"] <= 20
    for corpus, by_condition in cv["results"].items():
        assert set(by_condition) == {"clean", "isolated", "telephone"}
        head = by_condition["clean"]["voice head"]
        assert 0 <= head["closed"]["ua"] <= 1 and 0 <= head["angry_false_alarm"] <= 1 and "ece_calibrated" in head
    assert cv["results"]["turev-db"]["clean"]["voice head"]["classes"] == ["neutral", "happy", "sad", "angry"]
    assert "8-class" in cv["results"]["ravdess"]["clean"]["voice head"]
    loco = audio.leave_one_corpus_out(three_small_corpora, recipe=recipe, temperature=cv["temperature"], n_resamples=10)
    assert set(loco["results"]) == {"ravdess", "turev-db", "urdu"} and set(loco["ravdess_only"]) == {"turev-db", "urdu"}
    assert "angry false alarms" in loco["markdown"] and "Leave one corpus out" in loco["markdown"]



# --- the collection reference ------------------------------------------------------------------------


def _two_channels(seed: int = 0):
    """Segment-feature-shaped rows of four classes in two corpora; corpus ``b`` is corpus ``a``'s
    kind of clips through another channel: every row moved by one constant offset, which points
    towards class 0 (so a head that reads features as computed calls b's clips class 0)."""
    import pandas as pd

    from multimodal_ser import voice
    from multimodal_ser.training.audio.crossval import Data

    rng = np.random.default_rng(seed)
    n_layers, d_model = audio.features.ENCODER_SHAPES[audio.features.ENCODER_NAME]
    width = 2 * n_layers * d_model + len(voice.HAND_FEATURES)
    directions = rng.standard_normal((4, width)).astype(np.float32)
    labels = np.tile(np.arange(4), 60)
    corpus = np.repeat(["a", "b"], len(labels) // 2)
    x = directions[labels] + 0.5 * rng.standard_normal((len(labels), width)).astype(np.float32)
    x[corpus == "b"] += 3 * directions[0]
    targets = np.eye(8, dtype=bool)[labels]
    manifest = pd.DataFrame({"corpus": corpus, "speaker": [f"{c}:1" for c in corpus]})
    return Data(manifest, {"clean": x}, targets, np.ones_like(targets)), labels, corpus


def test_a_collection_head_reads_each_corpus_against_its_own_mean():
    data, labels, corpus = _two_channels()
    train, test = corpus == "a", corpus == "b"
    plain = dict(augment=(), epochs=5, lbfgs_iterations=30)
    accuracy = {}
    for reference in ("none", "collection"):
        recipe = audio.HeadRecipe(reference=reference, **plain)
        head = data.fit(train, recipe=recipe, seed=0)
        predicted = audio.head.predict_head(head, data.referenced("clean", test, recipe=recipe)).argmax(axis=1)
        accuracy[reference] = np.mean(predicted == labels[test])
    assert accuracy["collection"] > 0.95  # the channel's offset is gone with the collection's mean
    assert accuracy["none"] < 0.5  # read as computed, the other channel looks like class 0


def test_referenced_features_remove_the_mean_of_the_chosen_rows_of_each_corpus():
    data, _, corpus = _two_channels()
    recipe = audio.HeadRecipe(reference="collection")
    rows = np.zeros(len(corpus), dtype=bool)
    rows[::3] = True
    chosen = data.referenced("clean", rows, recipe=recipe)
    for name in ("a", "b"):
        np.testing.assert_allclose(chosen[corpus[rows] == name].mean(axis=0), 0, atol=1e-4)
    whole = data.referenced("clean", rows, recipe=recipe, keep_shape=True)
    np.testing.assert_array_equal(whole[~rows], data.features["clean"][~rows])  # the other rows as they are
    np.testing.assert_array_equal(data.referenced("clean", rows, recipe=audio.HeadRecipe()), data.features["clean"][rows])
    with pytest.raises(ValueError, match="reference must be one of"):
        audio.HeadRecipe(reference="speaker")
