"""Diarisation: clustering, turns, the CAM++ encoder on the sample call, labels in the timeline, DER."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from multimodal_ser import diarisation
from multimodal_ser.diarisation import SpeakerEncoder, SpeakerWindows, cluster, speaker_of, turns, window_spans
from multimodal_ser.errors import ModelError
from multimodal_ser.media import load_audio
from multimodal_ser.options import AnalysisOptions


def _speaker_embeddings(order: list[int], *, n_speakers: int, noise: float, seed: int = 0) -> np.ndarray:
    """One 192-d embedding per entry of ``order`` (the speaker index), scattered around its speaker's direction."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_speakers, 192))
    return centres[order] / np.linalg.norm(centres[order], axis=1, keepdims=True) * 10 + rng.normal(scale=noise, size=(len(order), 192))


@pytest.mark.parametrize("n_speakers", [2, 3])
def test_clustering_finds_the_speakers_of_turn_taking_embeddings(n_speakers):
    order = [turn % n_speakers for turn in range(12) for _ in range(5)]  # 12 turns of 5 windows
    embeddings = _speaker_embeddings(order, n_speakers=n_speakers, noise=0.5)
    assert cluster(embeddings).tolist() == order
    assert cluster(embeddings, num_speakers=n_speakers).tolist() == order


def test_one_voice_stays_one_speaker_and_a_given_count_is_kept():
    one = _speaker_embeddings([0] * 30, n_speakers=1, noise=0.3)
    assert set(cluster(one).tolist()) == {0}
    two = _speaker_embeddings([0] * 10 + [1] * 10, n_speakers=2, noise=0.5)
    assert cluster(two, num_speakers=1).tolist() == [0] * 20
    assert cluster(two[[0, 1, 15]], num_speakers=2).tolist() == [0, 0, 1]  # too few for spectral clustering
    with pytest.raises(ValueError, match="num_speakers"):
        cluster(two, num_speakers=0)


def test_windows_cover_a_segment_and_turns_split_between_window_centres():
    assert window_spans(0.0, 0.2) == []
    assert window_spans(1.0, 2.0) == [(1.0, 2.0)]
    spans = window_spans(0.0, 3.0)
    assert spans[0] == (0.0, 1.5) and spans[-1] == (1.5, 3.0) and len(spans) == 3
    # windows 0-1.5, 0.75-2.25, 1.5-3.0 (one stretch), then 4-5 alone
    found = turns(np.array([*spans, (4.0, 5.0)]), np.array([0, 1, 1, 0]))
    assert found == [(0.0, 1.125, "S1"), (1.125, 3.0, "S2"), (4.0, 5.0, "S1")]
    # a single window disagreeing with both neighbours in one stretch is smoothed away
    assert turns(np.array([(0, 1.5), (0.75, 2.25), (1.5, 3.0)]), np.array([0, 1, 0])) == [(0.0, 3.0, "S1")]


def test_a_segment_takes_the_speaker_it_overlaps_most_else_the_nearest():
    found = [(0.0, 2.0, "S1"), (2.0, 5.0, "S2")]
    assert speaker_of(1.5, 4.0, found) == "S2"
    assert speaker_of(5.5, 6.0, found) == "S2"
    assert speaker_of(0.0, 1.0, []) is None


def test_diarisation_options_and_their_flags():
    import argparse

    from multimodal_ser.options import add_option_arguments, option_values

    parser = argparse.ArgumentParser()
    add_option_arguments(parser, ["diarise", "speakers"])
    assert option_values(parser.parse_args([]), ["diarise", "speakers"]) == {"diarise": True, "speakers": None}
    assert option_values(parser.parse_args(["--no-diarise"]), ["diarise"]) == {"diarise": False}
    assert AnalysisOptions(**option_values(parser.parse_args(["--speakers", "2"]), ["diarise", "speakers"])).speakers == 2
    with pytest.raises(ValueError, match="diarise"):
        AnalysisOptions(diarise=False, speakers=2)
    with pytest.raises(ValueError, match="speakers"):
        AnalysisOptions(speakers=0)


def test_der_of_a_constructed_case_counts_confusion_outside_the_collar():
    from multimodal_ser.evaluation.conversations import diarisation_error

    reference = [(0.0, 10.0, "A"), (10.0, 20.0, "B")]
    perfect = diarisation_error([(reference, [(0.0, 10.0, "x"), (10.0, 20.0, "y")])])
    assert perfect["der"] == 0.0 and perfect["n"] == 1
    late = diarisation_error([(reference, [(0.0, 12.0, "x"), (12.0, 20.0, "y")])])
    scored = 20.0 - 2 * 0.125 - 0.25  # the collar (0.25 s) around each of the three reference boundaries
    assert late["confusion"] == pytest.approx((12.0 - 10.125) / scored)
    assert late["der"] == pytest.approx(late["confusion"]) and late["missed"] == 0.0
    missed = diarisation_error([(reference, [(0.0, 10.0, "x")])])
    assert missed["missed"] == pytest.approx((10.0 - 0.125 - 0.125) / scored)


@pytest.mark.models
def test_a_changed_weight_file_is_refused_by_name(monkeypatch):
    package, relative, _ = diarisation.CAMPPLUS_WEIGHTS
    monkeypatch.setattr(diarisation, "CAMPPLUS_WEIGHTS", (package, relative, "0" * 64))
    with pytest.raises(ModelError, match="campplus_cn_en_common.pt: sha256 is"):
        SpeakerEncoder()
    monkeypatch.setattr(diarisation, "CAMPPLUS_WEIGHTS", ("no_such_package_here", relative, "0" * 64))
    with pytest.raises(ModelError, match="no_such_package_here"):
        SpeakerEncoder()


def _sample_call(sample_media):
    with open(sample_media / "call_mono.csv") as f:
        rows = list(csv.DictReader(f))
    return load_audio(sample_media / "call_mono.flac"), rows


@pytest.mark.models
def test_the_sample_mono_call_is_diarised_into_its_two_speakers(sample_media):
    audio, rows = _sample_call(sample_media)
    voices = SpeakerWindows(SpeakerEncoder())
    voices.add(audio, 0.0, [(float(r["start"]), float(r["end"])) for r in rows])
    found = voices.turns()
    named = {r["speaker"]: set() for r in rows}
    for r in rows:
        named[r["speaker"]].add(speaker_of(float(r["start"]), float(r["end"]), found))
    assert named == {"agent": {"S1"}, "customer": {"S2"}}
    assert {s for _, _, s in voices.turns(num_speakers=2)} == {"S1", "S2"}


@pytest.mark.models
@pytest.mark.slow
def test_speakers_reach_segments_and_words_of_a_mono_recording(sample_media):
    import multimodal_ser as mser

    _, rows = _sample_call(sample_media)
    timeline = mser.analyze(sample_media / "call_mono.flac", AnalysisOptions(modalities=("text",), asr_model="tiny.en"))
    speech = timeline.segments[timeline.segments["speech"]]
    expected = {"agent": "S1", "customer": "S2"}
    for _, segment in speech.iterrows():
        middle = (segment["start"] + segment["end"]) / 2
        line = min(rows, key=lambda r: abs((float(r["start"]) + float(r["end"])) / 2 - middle))
        assert segment["speaker"] == expected[line["speaker"]], (segment["start"], segment["end"], segment["text"])
    words = timeline.words.merge(timeline.segments[["segment_id", "speaker"]], on="segment_id", suffixes=("", "_segment"))
    assert len(words) and (words["speaker"] == words["speaker_segment"]).all()
    assert timeline.metadata["models"]["speakers"]["sha256"] == diarisation.CAMPPLUS_WEIGHTS[2]
    named = mser.analyze(sample_media / "call_mono.flac", AnalysisOptions(modalities=("text",), asr_model="tiny.en"), speaker="caller")
    assert set(named.segments.loc[named.segments["speech"], "speaker"]) == {"caller"}
