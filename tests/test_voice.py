"""The voice branch: segment spans and features, the packaged head's loading, predictions on real speech."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from head_factory import saved_voice_head

from multimodal_ser import heads, voice
from multimodal_ser.encoder import WINDOW_FRAMES, EncodedWindow
from multimodal_ser.errors import ModelError
from multimodal_ser.evaluation.datasets import ravdess_manifest
from multimodal_ser.labels import EMOTIONS, RAVDESS_8
from multimodal_ser.media import SAMPLE_RATE, load_audio

N_LAYERS, D_MODEL = 7, 512


def fake_window(seconds=10.0, offset=100.0, seed=0):
    """An EncodedWindow with random hidden states (no model needed)."""
    rng = np.random.default_rng(seed)
    hidden = torch.from_numpy(rng.standard_normal((N_LAYERS, 1500, D_MODEL)).astype(np.float32))
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    audio = (0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32)
    return EncodedWindow(offset=offset, duration=seconds, audio=audio, output=hidden[-1], hidden_states=hidden)


# --- spans and features (no model) -----------------------------------------------------------------


def test_segment_span_clips_widens_and_refuses():
    window = fake_window()
    assert voice.segment_span(window, 101.0, 103.0) == (101.0, 103.0, False)
    assert voice.segment_span(window, 95.0, 101.0) == (100.0, 101.0, False)  # clipped to the window
    start, end, widened = voice.segment_span(window, 104.0, 104.1)
    assert widened and end - start == pytest.approx(voice.MIN_SEGMENT_SECONDS) and start < 104.0 < 104.1 < end
    start, end, widened = voice.segment_span(window, 100.0, 100.1)  # at the edge: widened inwards
    assert widened and start == pytest.approx(100.0) and end == pytest.approx(100.0 + voice.MIN_SEGMENT_SECONDS)
    with pytest.raises(ValueError, match="outside the window"):
        voice.segment_span(window, 120.0, 121.0)
    with pytest.raises(ValueError, match="after its start"):
        voice.segment_span(window, 102.0, 102.0)


def test_segment_features_layout():
    window = fake_window()
    features = voice.segment_features(window, 102.0, 104.0)
    assert features.shape == (2 * N_LAYERS * D_MODEL + len(voice.HAND_FEATURES),) and features.dtype == np.float32
    frames = window.hidden_states[:, 100:200]  # 2 s to 4 s at 50 frames/s
    pooled = features[: 2 * N_LAYERS * D_MODEL].reshape(N_LAYERS, 2, D_MODEL)
    np.testing.assert_allclose(pooled[:, 0], frames.mean(dim=1).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pooled[:, 1], frames.std(dim=1, unbiased=False).numpy(), rtol=1e-5, atol=1e-6)
    hand = dict(zip(voice.HAND_FEATURES, features[2 * N_LAYERS * D_MODEL :], strict=True))
    assert hand["f0_median_hz"] == pytest.approx(150.0, rel=0.02)  # prosody reads the segment's own samples


def test_circumplex_and_shared_space():
    assert voice.SHARED_SPACE.shape == (8, 7) and np.all(voice.SHARED_SPACE.sum(axis=1) == 1)
    calm, neutral = RAVDESS_8.index("calm"), EMOTIONS.index("neutral")
    assert voice.SHARED_SPACE[calm, neutral] == 1 and voice.SHARED_SPACE[:, neutral].sum() == 2
    assert np.all(np.abs(voice.CIRCUMPLEX_MATRIX) <= 1)
    valence, arousal = voice.CIRCUMPLEX["angry"]
    assert valence < 0 < arousal and voice.CIRCUMPLEX["sad"][1] < 0 < voice.CIRCUMPLEX["happy"][0]


# --- the packaged head ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def packaged_model():
    return voice.VoiceEmotionModel()


@pytest.mark.models
def test_packaged_head_loads_with_its_checksum(packaged_model):
    ids = packaged_model.model_ids
    assert ids["audio_head"] == "audio_head.safetensors"
    assert ids["audio_head_sha256"] == heads.packaged_checksums()["audio_head.safetensors"]
    assert ids["audio_features"] == voice.FEATURE_RECIPE
    assert voice.DEFAULT_HEAD_PATH.stat().st_size < 5_000_000
    assert packaged_model.head.n_features == 2 * N_LAYERS * D_MODEL + len(voice.HAND_FEATURES)


@pytest.mark.models
def test_frame_level_features_share_the_encoder_grid(packaged_model):
    window = fake_window()
    track = packaged_model.frames(window, 102.0, 104.0)
    assert track.times.shape == (100,) and track.hidden.shape == (100, D_MODEL) and track.f0_hz.shape == (100,)
    assert track.times[0] == pytest.approx(102.01) and np.allclose(np.diff(track.times), 0.02)
    weights = packaged_model.head.layer_weights().detach()
    expected = torch.einsum("l,lnd->nd", weights, window.hidden_states[:, 100:200]).numpy()
    np.testing.assert_allclose(track.hidden, expected, rtol=1e-4, atol=1e-5)
    assert np.nanmedian(track.f0_hz) == pytest.approx(150.0, rel=0.02)


@pytest.mark.models
def test_corrupted_copy_of_the_packaged_head_is_refused(tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(heads.CHECKSUMS_FILE, models / "SHA256SUMS")
    corrupt = models / "audio_head.safetensors"
    data = bytearray(voice.DEFAULT_HEAD_PATH.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the weights: still parses, hash differs
    corrupt.write_bytes(bytes(data))
    monkeypatch.setattr(heads, "MODELS_DIR", models)
    monkeypatch.setattr(heads, "CHECKSUMS_FILE", models / "SHA256SUMS")
    with pytest.raises(ModelError, match="sha256"):
        voice.VoiceEmotionModel(head_path=corrupt)


@pytest.mark.models
def test_truncated_or_foreign_heads_are_refused(tmp_path):
    truncated = tmp_path / "head.safetensors"
    truncated.write_bytes(voice.DEFAULT_HEAD_PATH.read_bytes()[:1000])
    with pytest.raises(ModelError, match="not a readable safetensors head"):
        voice.VoiceEmotionModel(head_path=truncated)
    tensors, config = heads.load_head(voice.DEFAULT_HEAD_PATH)
    foreign = heads.save_head(tmp_path / "other.safetensors", tensors, {**config, "recipe": "some-other-features/v9"})
    with pytest.raises(ModelError, match="trained on features"):
        voice.VoiceEmotionModel(head_path=foreign)
    with pytest.raises(ModelError, match="not found"):
        voice.VoiceEmotionModel(head_path=tmp_path / "absent.safetensors")


# --- real speech through the real encoder ----------------------------------------------------------


@pytest.fixture(scope="module")
def encoder():
    from multimodal_ser.encoder import SpeechEncoder
    from multimodal_ser.weights import load_openai_whisper

    try:
        return SpeechEncoder(load_openai_whisper("base"))
    except ModelError as e:
        pytest.skip(f"packaged Whisper base not available: {e}")


@pytest.fixture(scope="module")
def ravdess(shared_data):
    folder = shared_data / "ravdess-speech-16k"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return ravdess_manifest(folder)


@pytest.mark.models
def test_predictions_on_real_clips(encoder, ravdess, packaged_model):
    clips = ravdess[(ravdess["actor"] == 3) & (ravdess["statement"] == 1) & (ravdess["repetition"] == 1)].head(4)
    gap = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    pieces, segments, cursor = [], [], 7.0
    for path in clips["path"]:
        audio = load_audio(path)
        pieces += [audio, gap]
        segments.append((cursor, cursor + len(audio) / SAMPLE_RATE))
        cursor += (len(audio) + len(gap)) / SAMPLE_RATE
    window = encoder.encode(np.concatenate(pieces), offset=7.0)  # a window starting 7 s into a recording
    pred = packaged_model.predict(window, segments + [(8.0, 8.2)])
    k = len(segments) + 1
    assert pred.emotions.shape == (k, 7) and pred.emotions8.shape == (k, 8)
    np.testing.assert_allclose(pred.emotions.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(pred.emotions8.sum(axis=1), 1.0, atol=1e-6)
    assert np.all((pred.arousal >= -1) & (pred.arousal <= 1)) and np.all((pred.valence >= -1) & (pred.valence <= 1))
    assert pred.embeddings.shape == (k, 256) and pred.embeddings.dtype == np.float32
    assert list(pred.widened) == [False] * len(segments) + [True]
    assert set(pred.labels) <= set(EMOTIONS)
    empty = packaged_model.predict(window, [])
    assert empty.emotions.shape == (0, 7) and empty.embeddings.shape == (0, 256)
    with pytest.raises(ValueError, match="outside the window"):
        packaged_model.predict(window, [(1.0, 2.0)])


@pytest.mark.slow
@pytest.mark.models
def test_held_out_actors_angry_versus_neutral(encoder, ravdess, tmp_path, monkeypatch):
    """A head trained the shipped way on 4 actors separates 2 other actors' angry clips from their neutral/calm ones.

    (The packaged head has heard all 20 available actors, so held-out actors need a head of their own.)
    """
    from multimodal_ser.training import audio as training

    monkeypatch.setenv("MSER_CACHE", str(tmp_path / "cache"))
    subset = ravdess[ravdess["actor"].isin([1, 2, 3, 4, 5, 6]) & ravdess["label8"].isin(["angry", "neutral", "calm"])]
    corpus = training.Corpus.load(subset)
    features = training.extract_features(corpus, [training.CLEAN], seed=0, encoder=encoder)["clean"]
    targets = np.array([RAVDESS_8.index(label) for label in corpus.manifest["label8"]])
    test = corpus.manifest["actor"].isin([5, 6]).to_numpy()
    head = training.fit_head(features[~test], targets[~test], seed=0, recipe=training.HeadRecipe(epochs=40))
    predicted_angry = training.predict_head(head, features[test]).argmax(axis=1) == RAVDESS_8.index("angry")
    truly_angry = targets[test] == RAVDESS_8.index("angry")
    balanced = (predicted_angry[truly_angry].mean() + (~predicted_angry[~truly_angry]).mean()) / 2
    assert balanced >= 0.8  # chance is 0.5


@pytest.mark.models
def test_clips_encoded_alone_match_their_own_windows(encoder, ravdess, packaged_model):
    """encode_alone with every padding frame kept is encode(); with the default stride the voice
    moves no more than when the clip is cut 10 ms later (a batch of clips of unequal length, cut mid-sentence)."""
    rows = ravdess[(ravdess["actor"] == 7) & (ravdess["repetition"] == 1)].iloc[[0, 9, 16, 22, 29]]
    clips = [load_audio(path)[: int((2.0 + k) * SAMPLE_RATE)] for k, path in enumerate(rows["path"])]
    solo = [encoder.encode(clip, normalise=False) for clip in clips]
    later = [encoder.encode(clip[160:], offset=0.01, normalise=False) for clip in clips]
    exact = encoder.encode_alone(clips, stride=1, share_padding=0)
    strided = encoder.encode_alone(clips)
    moved, noise = [], []
    for clip, whole, shifted, one, ten in zip(clips, solo, later, exact, strided, strict=True):
        n = -(-len(clip) // 320)
        assert one.hidden_states.shape == (encoder.n_layers, n, encoder.d_model) and ten.decoder_input(WINDOW_FRAMES).shape == whole.output.shape
        torch.testing.assert_close(one.hidden_states, whole.hidden_states[:, :n], rtol=1e-4, atol=1e-2)
        torch.testing.assert_close(one.output, whole.output, rtol=1e-4, atol=1e-3)
        segment = [(0.2, len(clip) / SAMPLE_RATE - 0.2)]
        reference = packaged_model.predict(whole, segment).emotions
        moved.append(np.abs(packaged_model.predict(ten, segment).emotions - reference).mean())
        noise.append(np.abs(packaged_model.predict(shifted, segment).emotions - reference).mean())
    assert np.mean(moved) <= 1.5 * np.mean(noise) + 0.005, (moved, noise)


@pytest.mark.models
def test_clips_of_like_length_borrow_padding_states_within_the_noise(encoder, ravdess, packaged_model):
    """Seven clips in one 0.5-s length group: the first four are encoded whole and lend their mean
    padding states to the other three, whose voice moves no more than when cut 10 ms later. Clips
    that lend each other their own padding (copies of one clip) get exactly the whole result."""
    rows = ravdess[(ravdess["actor"] == 8) & (ravdess["repetition"] == 2)].iloc[[1, 5, 9, 13, 17, 21, 25]]
    clips = [load_audio(path)[: int((3.1 + 0.05 * k) * SAMPLE_RATE)] for k, path in enumerate(rows["path"])]
    whole = encoder.encode_alone(clips, share_padding=0)
    shared = encoder.encode_alone(clips, share_padding=4)
    for one, other in zip(whole[:4], shared[:4], strict=True):  # the lenders are encoded whole
        torch.testing.assert_close(one.hidden_states, other.hidden_states)
    moved, noise = [], []
    for clip, one in zip(clips[4:], shared[4:], strict=True):
        n = -(-len(clip) // 320)
        assert one.hidden_states.shape == (encoder.n_layers, n, encoder.d_model)
        assert one.output.shape == (len(one.output_counts), encoder.d_model) and one.output_counts.sum() == WINDOW_FRAMES
        segment = [(0.2, len(clip) / SAMPLE_RATE - 0.2)]
        reference = packaged_model.predict(encoder.encode(clip, normalise=False), segment).emotions
        shifted = encoder.encode(clip[160:], offset=0.01, normalise=False)
        moved.append(np.abs(packaged_model.predict(one, segment).emotions - reference).mean())
        noise.append(np.abs(packaged_model.predict(shifted, segment).emotions - reference).mean())
    assert np.mean(moved) <= 1.5 * np.mean(noise) + 0.005, (moved, noise)

    copies = encoder.encode_alone([clips[0]] * 6, share_padding=4)
    for borrowed in copies[4:]:
        torch.testing.assert_close(borrowed.hidden_states, whole[0].hidden_states, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(borrowed.output, whole[0].output, rtol=1e-5, atol=1e-4)


@pytest.mark.models
def test_the_recording_level_does_not_change_what_the_voice_says(encoder, ravdess, packaged_model):
    """The same clip recorded 14 dB quieter (a far microphone) or 6 dB louder: the window is brought to one
    speech level before the encoder and prosody, so the voice branch gives the same probabilities."""
    audio = load_audio(ravdess[(ravdess["actor"] == 2) & (ravdess["label8"] == "neutral")]["path"].iloc[0])
    segment = [(0.3, len(audio) / SAMPLE_RATE - 0.3)]
    predictions = [packaged_model.predict(encoder.encode(gain * audio), segment).emotions for gain in (0.2, 1.0, 2.0)]
    assert np.max(np.abs(audio)) * 2.0 < 1.0  # no clipping at the loudest gain
    for other in predictions[1:]:
        np.testing.assert_allclose(other, predictions[0], atol=2e-3)


@pytest.mark.models
def test_the_voice_model_applies_the_temperature_its_head_stores(packaged_model):
    import torch

    from multimodal_ser.calibration import apply_temperature

    assert packaged_model.temperature == packaged_model.config["calibration"]["temperature"] != 1.0
    features = np.random.default_rng(0).standard_normal((3, packaged_model.head.n_features)).astype(np.float32)
    calibrated, _ = packaged_model.probabilities(features)
    with torch.inference_mode():
        raw = packaged_model.head.probabilities(torch.from_numpy(features))[0].double().numpy()
    np.testing.assert_allclose(calibrated, apply_temperature(raw, packaged_model.temperature), atol=1e-9)


@pytest.mark.models
def test_features_kept_from_an_earlier_pass_give_what_predict_gives(packaged_model):
    from multimodal_ser.voice import CIRCUMPLEX_MATRIX, SHARED_SPACE

    features = np.random.default_rng(1).standard_normal((4, packaged_model.head.n_features)).astype(np.float32)
    pred = packaged_model.predict_features(features, widened=[False, True, False, False])
    probs8, embedding = packaged_model.probabilities(features)
    np.testing.assert_array_equal(pred.emotions8, probs8)
    np.testing.assert_array_equal(pred.emotions, probs8 @ SHARED_SPACE)
    np.testing.assert_array_equal(pred.valence, (probs8 @ CIRCUMPLEX_MATRIX)[:, 0])
    np.testing.assert_array_equal(pred.embeddings, embedding)
    assert list(pred.widened) == [False, True, False, False]
    assert not packaged_model.predict_features(features).widened.any()


# --- the collection reference ------------------------------------------------------------------------


def test_a_collection_mean_leaves_out_undefined_statistics_and_rows_with_nothing_encoded():
    x = np.array([[1.0, np.nan, 2.0], [3.0, 4.0, np.nan], [np.nan, np.nan, np.nan], [10.0, 10.0, 10.0], [14.0, 12.0, 10.0]])
    np.testing.assert_allclose(voice.collection_mean(x[:2]), [2.0, 4.0, 2.0])
    centred = voice.centre_by_collection(x, ["a", "a", "a", "b", "b"])
    np.testing.assert_allclose(centred[:2], [[-1.0, np.nan, 0.0], [1.0, 0.0, np.nan]])
    assert np.isnan(centred[2]).all()  # nothing encoded: stays so, and counts in no mean
    np.testing.assert_allclose(centred[3:], [[-2.0, -1.0, 0.0], [2.0, 1.0, 0.0]])
    assert voice.collection_mean(np.full((2, 2), np.nan)).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="shape"):
        voice.collection_mean(np.zeros((0, 3)))


def test_a_collection_head_needs_its_collection_mean_and_a_plain_head_refuses_one(tmp_path):
    collection_head = voice.VoiceEmotionModel(head_path=saved_voice_head(tmp_path / "c.safetensors", "collection"))
    plain_head = voice.VoiceEmotionModel(head_path=saved_voice_head(tmp_path / "p.safetensors", "none"))
    assert collection_head.reference == collection_head.model_ids["audio_reference"] == "collection"
    assert plain_head.reference == "none"
    rows = np.random.default_rng(2).standard_normal((5, collection_head.head.n_features)).astype(np.float32)
    mean = voice.collection_mean(rows)
    with pytest.raises(ValueError, match="mean of their collection"):
        collection_head.predict_features(rows)
    with pytest.raises(ValueError, match="takes no collection mean"):
        plain_head.predict_features(rows, collection=mean)
    with pytest.raises(ValueError, match="reads 7233 features"):
        collection_head.predict_features(rows, collection=mean[:100])
    read = collection_head.predict_features(rows, collection=mean)
    np.testing.assert_allclose(read.emotions8, collection_head.probabilities(rows - mean.astype(np.float32))[0], atol=1e-12)
    window = EncodedWindow(offset=0.0, duration=1.0, audio=np.zeros(SAMPLE_RATE, np.float32), output=torch.zeros(1500, 512),
                           hidden_states=torch.zeros(7, 50, 512))
    with pytest.raises(ValueError, match="mean of their collection"):  # a recording alone has no collection
        collection_head.predict(window, [(0.0, 1.0)])
    alone = collection_head.predict(window, [(0.0, 1.0)], collection=mean)
    np.testing.assert_allclose(alone.emotions, collection_head.predict_features(alone.features, collection=mean).emotions)
