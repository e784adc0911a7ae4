"""How the voice head's training clips are laid out for the encoder: conditions, packing, isolation."""

from __future__ import annotations

import numpy as np
import pytest

from multimodal_ser.encoder import WINDOW_SAMPLES
from multimodal_ser.media import SAMPLE_RATE
from multimodal_ser.training import audio


@pytest.mark.parametrize("name", ["clean", "isolated", "white@10dB", "babble@0dB", "pitch@+2st", "pitch@-1.5st", "tempo@x0.9"])
def test_condition_names_round_trip(name):
    assert audio.Condition.parse(name).name == name


@pytest.mark.parametrize("name", ["", "noisy", "white", "white@10", "isolated@3dB", "tempo@x3", "clean@1dB"])
def test_bad_condition_names_are_refused(name):
    with pytest.raises(ValueError):
        audio.Condition.parse(name)


def test_the_shipped_recipe_trains_on_isolated_and_noisy_clips_too():
    assert [c.name for c in audio.augment_conditions(audio.RECIPE)] == ["isolated", "white@20dB", "white@10dB", "white@0dB"]
    recipe = audio.HeadRecipe(augment=("isolated",))
    features = {"clean": np.zeros((4, 3)), "isolated": np.ones((4, 3))}
    x, y = audio.training_rows(features, recipe, np.array([True, False, True, True]), np.arange(4))
    assert x.shape == (6, 3) and list(x[:, 0]) == [0, 0, 0, 1, 1, 1] and list(y) == [0, 2, 3, 0, 2, 3]


@pytest.fixture(scope="module")
def corpus(shared_data):
    from multimodal_ser.manifest import ravdess_manifest

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
