"""End to end: real media in, Parquet timelines out, bad input reported per file."""

import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from media_factory import place, tone, write_rgb_video, write_video, write_wav

from multimodal_ser import AnalysisOptions, Analyzer, load_timeline
from multimodal_ser.cli import main
from multimodal_ser.errors import MediaError, TranscriptError
from multimodal_ser.labels import EMOTIONS, MODALITIES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def analyzer():
    return Analyzer(AnalysisOptions(language="en"))


@pytest.fixture(scope="module")
def talking_head(analyzer, shared_data):
    return analyzer.analyze(shared_data / "talking-heads" / "retalking-1.mp4")


@pytest.mark.models
def test_talking_head_timeline_has_the_spoken_words(talking_head):
    words = " ".join(talking_head.words["word"]).lower()
    assert re.sub(r"[^a-z' ]", "", words).split()[:4] == ["my", "biggest", "weaknesses", "is"]
    assert (talking_head.words["end"] >= talking_head.words["start"]).all()
    assert talking_head.words["start"].is_monotonic_increasing
    assert talking_head.words["end"].max() <= 6.2


@pytest.mark.models
def test_every_branch_fills_its_columns(talking_head):
    seg = talking_head.segments
    speech = seg[seg["speech"]]
    assert len(speech) >= 1
    for m in MODALITIES:
        assert speech[f"{m}_present"].all(), m
        np.testing.assert_allclose(speech[[f"{m}_{e}" for e in EMOTIONS]].sum(axis=1), 1.0, atol=1e-4)
    assert speech["label"].isin(EMOTIONS).all()
    assert set(speech["fused_from"]) == {"audio+text+face"}
    assert speech["sentiment"].isin(["negative", "neutral", "positive"]).all()
    assert talking_head.frames["face_present"].mean() > 0.9


@pytest.mark.models
def test_the_grid_covers_the_recording_without_overlap(talking_head):
    seg = talking_head.segments
    assert seg["start"].iloc[0] == pytest.approx(0.0, abs=0.3)
    assert (seg["start"].to_numpy()[1:] >= seg["end"].to_numpy()[:-1] - 1e-6).all()
    assert seg["end"].iloc[-1] == pytest.approx(talking_head.metadata["source"]["duration"], abs=0.3)


@pytest.mark.models
def test_summary_of_saved_timelines_goes_on_past_a_bad_one(talking_head, tmp_path, capsys):
    talking_head.save(tmp_path / "good")
    (tmp_path / "empty").mkdir()
    assert main(["summary", str(tmp_path / "good"), str(tmp_path / "empty")]) == 1
    out, err = capsys.readouterr()
    assert "## " + str(tmp_path / "good") in out and "| fused |" in out and "agrees with fused" in out
    assert "empty" in err and "1 of 2 timeline(s)" in err


@pytest.mark.models
def test_saved_timeline_reads_back_with_provenance(talking_head, tmp_path):
    talking_head.save(tmp_path)
    back = load_timeline(tmp_path)
    pd.testing.assert_series_equal(back.segments["text"].astype(object), talking_head.segments["text"].astype(object), check_names=False)
    meta = back.metadata
    assert meta["version"] and len(meta["source"]["sha256"]) == 64
    assert set(meta["models"]) >= {"whisper", "audio", "text", "face"}
    assert meta["fusion"]["fusion"] == "late"


@pytest.mark.models
def test_transcript_replaces_asr_and_gets_word_times(analyzer, shared_data, tmp_path):
    transcript = tmp_path / "t.srt"
    transcript.write_text("1\n00:00:00,000 --> 00:00:02,700\nANN: My biggest weakness is asking for help.\n\n2\n00:00:03,300 --> 00:00:04,800\nANN: I would like to do better at that.\n")
    timeline = analyzer.analyze(shared_data / "talking-heads" / "retalking-1.mp4", transcript=transcript)
    speech = timeline.segments[timeline.segments["speech"]]
    assert list(speech["text"]) == ["My biggest weakness is asking for help.", "I would like to do better at that."]
    assert list(speech["speaker"]) == ["ANN", "ANN"]
    assert speech["audio_present"].all()
    words = timeline.words
    assert list(words["word"])[:3] == ["My", "biggest", "weakness"]
    assert words.groupby("segment_id")["start"].min().tolist() == pytest.approx([0.0, 3.3], abs=0.4)


@pytest.mark.models
def test_transcript_language_is_detected_and_a_language_the_text_head_cannot_read_gives_no_label(shared_data, tmp_path):
    transcript = tmp_path / "t.srt"
    transcript.write_text("1\n00:00:00,000 --> 00:00:02,700\nMy biggest weakness is asking for help.\n")
    media = shared_data / "talking-heads" / "retalking-1.mp4"
    detected = Analyzer(AnalysisOptions(modalities=("text",))).analyze(media, transcript=transcript)
    assert detected.metadata["language"] == "en"  # Whisper's detection on the first window
    assert detected.segments.query("speech")["text_present"].all()
    told = Analyzer(AnalysisOptions(modalities=("text",), language="German")).analyze(media, transcript=transcript)
    speech = told.segments.query("speech")
    assert told.metadata["language"] == "de"
    assert not speech["text_present"].any() and speech["text_label"].isna().all()
    assert set(speech["text_absent_reason"]) == {"language de: the text head reads en only"}
    assert any("language de" in note for note in told.metadata["notes"])


@pytest.mark.models
def test_the_speaking_face_is_tied_to_its_speaker_and_an_unseen_voice_to_none(analyzer, shared_data, tmp_path):
    """S1 speaks for 4 s with her face moving (small, left) beside a still face; then S2's voice
    (another clip's audio) plays over both faces held still: S2 has no face."""
    import cv2

    from multimodal_ser.media import iter_audio
    from multimodal_ser.video import iter_frames

    heads = shared_data / "talking-heads"
    speaking, other = heads / "WDA_AlexandriaOcasioCortez_000.mp4", heads / "WDA_KatieHill_000.mp4"
    still = cv2.resize(next(rgb for _, rgb in iter_frames(other)), (320, 320), interpolation=cv2.INTER_AREA)
    frames = []
    for _, rgb in iter_frames(speaking, fps=25.0):
        if len(frames) == 100:
            break
        canvas = place(np.full((320, 560, 3), 90, np.uint8), cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_AREA), 0, 48)
        frames.append(place(canvas, still, 240, 0))
    frames += [frames[-1]] * 100
    voices = [np.concatenate(list(iter_audio(clip)), axis=1)[0, :64000] for clip in (speaking, other)]  # 4 s each
    media = write_rgb_video(tmp_path / "pair.mp4", frames, rate=25, audio=np.concatenate(voices))
    transcript = tmp_path / "turns.csv"
    transcript.write_text("start,end,speaker,text\n0,2,S1,hello\n2,4,S1,hello\n4,6,S2,hello\n6,8,S2,hello\n")

    timeline = analyzer.analyze(media, transcript=transcript)
    faces = timeline.frames[timeline.frames["face_present"]]
    assert faces["face_id"].nunique() == 2
    left = int(faces.loc[faces["box_x"] < 200, "face_id"].mode().iloc[0])
    segments = timeline.segments.set_index("speaker")
    assert segments.loc["S1", "face_speaker_id"].dropna().eq(left).all()
    assert segments.loc["S1", "speaker_face_id"].tolist() == [left, left]
    assert segments.loc["S2", "face_speaker_id"].isna().all() and segments.loc["S2", "speaker_face_id"].isna().all()


@pytest.mark.models
def test_pure_silence_is_a_timeline_without_speech(analyzer, tmp_path):
    timeline = analyzer.analyze(write_wav(tmp_path / "quiet.wav", np.zeros(16_000 * 3, dtype=np.float32)))
    assert not timeline.segments["speech"].any()
    assert not timeline.segments[[f"{m}_present" for m in MODALITIES]].any().any()
    assert timeline.words.empty and timeline.frames.empty
    assert any("no speech" in note for note in timeline.metadata["notes"])


@pytest.mark.models
def test_video_without_audio_track_still_gets_a_face_pass(analyzer, tmp_path):
    timeline = analyzer.analyze(write_video(tmp_path / "mute.mp4", seconds=2.0))
    assert any("no audio stream" in note for note in timeline.metadata["notes"])
    assert not timeline.segments["audio_present"].any()
    assert len(timeline.frames) >= 7 and not timeline.frames["face_present"].any()


def test_transcript_past_the_end_is_refused(analyzer, tmp_path):
    media = write_wav(tmp_path / "short.wav", tone(2.0))
    transcript = tmp_path / "long.csv"
    transcript.write_text("start,end,text\n0,1,hi\n5,9,later\n")
    with pytest.raises(TranscriptError, match="past the media's end"):
        analyzer.analyze(media, transcript=transcript)


@pytest.mark.models
def test_an_empty_cue_and_one_just_past_the_end_keep_their_voice_output(analyzer, tmp_path):
    media = write_wav(tmp_path / "short.wav", tone(2.0))
    transcript = tmp_path / "edge.csv"
    transcript.write_text("start,end,text\n0,0.5,hi\n1.0,1.0,[laughs]\n1.5,2.3,bye\n")  # 2.3: within the tolerance
    speech = analyzer.analyze(media, transcript=transcript).segments.query("speech")
    assert list(speech["text"]) == ["hi", "[laughs]", "bye"]
    assert speech["audio_present"].all() and (speech["end"] > speech["start"]).all()
    assert speech["end"].max() == pytest.approx(2.0)


@pytest.mark.models
def test_stereo_channels_as_speakers(analyzer, shared_data, tmp_path):
    from multimodal_ser.media import load_audio

    speech = load_audio(shared_data / "talking-heads" / "retalking-1.mp4")
    stereo = np.stack([speech, np.zeros_like(speech)], axis=1)
    path = write_wav(tmp_path / "call.wav", stereo)
    left = analyzer.analyze(path, channel=0, speaker="agent")
    right = analyzer.analyze(path, channel=1, speaker="customer")
    assert left.segments["speech"].any() and set(left.segments.loc[left.segments["speech"], "speaker"]) == {"agent"}
    assert not right.segments["speech"].any()
    with pytest.raises(MediaError, match="channel 2 does not exist"):
        analyzer.analyze(path, channel=2)


@pytest.mark.models
def test_cli_batch_goes_on_past_a_bad_file(shared_data, tmp_path, capsys):
    good = shared_data / "talking-heads" / "retalking-5.mp4"
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    status = main(["analyze", str(bad), str(good), "--out", str(tmp_path / "out"), "--modalities", "audio,text", "--no-progress"])
    err = capsys.readouterr().err
    assert status == 1
    assert "broken.mp4" in err and "1 of 2 input(s) failed" in err
    assert (tmp_path / "out" / "retalking-5" / "segments.parquet").is_file()
    assert not (tmp_path / "out" / "broken").exists()


def test_cli_help_explains_every_option():
    out = subprocess.run([sys.executable, "-m", "multimodal_ser.cli", "analyze", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    for option in ("--out", "--transcript", "--modalities", "--fps", "--fusion", "--asr-model", "--asr-engine", "--language"):
        assert option in out.stdout


@pytest.mark.models
def test_a_failing_speech_branch_stops_the_face_pass_beside_it(sample_media, monkeypatch):
    from multimodal_ser.face.analyzer import FaceAnalyzer

    scans = []
    real_scan = FaceAnalyzer.scan
    monkeypatch.setattr(FaceAnalyzer, "scan", lambda self, *a, **k: scans.append(real_scan(self, *a, **k)) or scans[-1])
    monkeypatch.setattr(Analyzer, "_speech_segments", lambda *a, **k: (_ for _ in ()).throw(MediaError("speech failed")))
    with pytest.raises(MediaError, match="speech failed"):
        Analyzer(AnalysisOptions(language="en")).analyze(sample_media / "interview.mp4")
    assert len(scans) == 1 and len(scans[0].rows) < 23 * 4  # returned early, not after all 93 sampled frames


@pytest.mark.models
@pytest.mark.skipif(sys.platform != "linux", reason="the priority of one thread is a Linux setting")
def test_the_work_beside_the_speech_branch_yields_to_it(analyzer, sample_media, monkeypatch):
    import os
    import threading

    import torch

    from multimodal_ser.diarisation import SpeakerWindows
    from multimodal_ser.face.analyzer import FaceAnalyzer

    seen = {}

    def recording(name, real):
        def run(*args, **kwargs):
            seen[name] = (os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), torch.get_num_threads())
            return real(*args, **kwargs)
        return run

    monkeypatch.setattr(FaceAnalyzer, "scan", recording("faces", FaceAnalyzer.scan))
    monkeypatch.setattr(SpeakerWindows, "add", recording("speakers", SpeakerWindows.add))
    main_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    analyzer.analyze(sample_media / "interview.mp4")
    assert seen == {"faces": (19, 1), "speakers": (19, 1)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_nice  # the main thread keeps its own
