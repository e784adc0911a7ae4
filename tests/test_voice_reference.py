"""A collection's voice reference: the file, its refusals, and analyze reading a recording against it."""

from __future__ import annotations

import numpy as np
import pytest

from multimodal_ser import voice
from multimodal_ser.errors import VoiceReferenceError
from multimodal_ser.options import AnalysisOptions
from multimodal_ser.voice_reference import VoiceReference, load_reference, save_reference

WIDTH = 2 * 7 * 512 + len(voice.HAND_FEATURES)


def _reference(segments: int = voice.MIN_COLLECTION, recipe: str = voice.FEATURE_RECIPE) -> VoiceReference:
    mean = np.random.default_rng(0).standard_normal(WIDTH).astype(np.float32)
    return VoiceReference(mean, segments, ["a.wav", "b.wav"], recipe)


def test_a_reference_is_saved_whole_and_read_back(tmp_path):
    path = save_reference(_reference(), tmp_path / "calls.npz")
    read = load_reference(path)
    np.testing.assert_array_equal(read.mean, _reference().mean)
    assert (read.segments, read.recordings, read.recipe) == (voice.MIN_COLLECTION, ["a.wav", "b.wav"], voice.FEATURE_RECIPE)
    assert len(read.sha256) == 64
    assert [p.name for p in tmp_path.iterdir()] == ["calls.npz"]  # no temporary file left beside it


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "not found"),
        (lambda p: p.write_bytes(b"not a numpy file"), "not a voice reference"),
        (lambda p: np.savez(p.open("wb"), mean=np.zeros(3)), "not a voice reference"),
        (lambda p: save_reference(_reference(recipe="older-features/v1"), p), "make it again"),
        (lambda p: save_reference(_reference(segments=voice.MIN_COLLECTION - 1), p), f"at least {voice.MIN_COLLECTION}"),
    ],
)
def test_a_bad_reference_is_refused_naming_the_file(tmp_path, make, message):
    path = tmp_path / "ref.npz"
    make(path)
    with pytest.raises(VoiceReferenceError, match=message) as error:
        load_reference(path)
    assert "ref.npz" in str(error.value)


def test_a_voice_reference_needs_the_voice():
    with pytest.raises(ValueError, match="needs the audio modality"):
        AnalysisOptions(modalities=("text",), voice_reference="calls.npz")


@pytest.mark.slow
@pytest.mark.models
def test_analyze_reads_each_segment_against_the_collection_it_was_given(shared_data, tmp_path):
    """A reference built from 30 RAVDESS clips; a clip analysed with it gets what the collection head
    says of its features less that mean, and its metadata names the reference."""
    from multimodal_ser.cli import main
    from multimodal_ser.pipeline import Analyzer

    clips = sorted((shared_data / "ravdess-speech-16k").rglob("*.flac"))[: voice.MIN_COLLECTION]
    if len(clips) < voice.MIN_COLLECTION:
        pytest.skip("RAVDESS speech clips not found")
    out = tmp_path / "ravdess.npz"
    assert main(["voice-reference", *map(str, clips), "--out", str(out), "--language", "en", "--no-progress"]) == 0
    reference = load_reference(out)
    assert reference.segments == voice.MIN_COLLECTION and len(reference.recordings) == voice.MIN_COLLECTION

    options = AnalysisOptions(modalities=("audio", "text"), language="en", diarise=False)
    analyzer = Analyzer(options)
    features = analyzer.voice_features(clips[0])
    referenced = Analyzer(AnalysisOptions(modalities=("audio", "text"), language="en", diarise=False, voice_reference=str(out)))
    timeline = referenced.analyze(clips[0])
    head = voice.VoiceEmotionModel(head_path=voice.packaged_head_path("collection"))
    expected = head.predict_features(features, collection=reference.mean).emotions
    speech = timeline.segments[timeline.segments["audio_present"]]
    np.testing.assert_allclose(speech[[f"audio_{e}" for e in voice.EMOTIONS]].to_numpy(), expected, atol=1e-5)
    audio_ids = timeline.metadata["models"]["audio"]
    assert audio_ids["audio_reference"] == "collection" and audio_ids["voice_reference"]["sha256"] == reference.sha256
    plain = analyzer.analyze(clips[0]).segments
    assert not np.allclose(plain.loc[plain["audio_present"], [f"audio_{e}" for e in voice.EMOTIONS]].to_numpy(), expected)

    # mser batch passes the reference to its workers: the same voice, and the reference in the item's identity
    from multimodal_ser.batch import open_table

    batch = tmp_path / "ds"
    flags = ["--modalities", "audio,text", "--language", "en", "--no-diarise", "--workers", "1", "--no-progress"]
    assert main(["batch", str(clips[0]), "--out", str(batch), "--voice-reference", str(out), *flags]) == 0
    rows = open_table(batch, "segments").to_table().to_pandas()
    rows = rows[rows["audio_present"]]
    np.testing.assert_allclose(rows[[f"audio_{e}" for e in voice.EMOTIONS]].to_numpy(), expected, atol=1e-5)


@pytest.mark.models
def test_too_few_segments_for_a_reference_is_one_clear_line(sample_media, tmp_path, capsys):
    from multimodal_ser.cli import main

    out = tmp_path / "ref.npz"
    assert main(["voice-reference", str(sample_media / "interview.mp4"), "--out", str(out), "--language", "en", "--no-progress"]) == 2
    assert f"a voice reference needs at least {voice.MIN_COLLECTION}" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.models
def test_a_reference_that_does_not_fit_the_head_stops_analyze_before_any_media(sample_media, tmp_path, capsys):
    from multimodal_ser.cli import main

    narrow = VoiceReference(np.zeros(100, dtype=np.float32), voice.MIN_COLLECTION, ["a.wav"], voice.FEATURE_RECIPE)
    path = save_reference(narrow, tmp_path / "narrow.npz")
    out = tmp_path / "out"
    assert main(["analyze", str(sample_media / "interview.mp4"), "--out", str(out), "--voice-reference", str(path)]) == 2
    assert "narrow.npz: a mean of 100 features; the collection head reads 7233" in capsys.readouterr().err
    assert not out.exists()
