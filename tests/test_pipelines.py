"""The use cases (interview, call, classroom) end to end on the project's own sample media."""

import cv2
import numpy as np
import pytest
from media_factory import place, write_rgb_video

from multimodal_ser.cli import main
from multimodal_ser.timeline import load_summary, load_timeline
from pipelines.call import analyze_call, call_summary
from pipelines.classroom import analyze_classroom, classroom_summary
from pipelines.interview import interview_summary

pytestmark = pytest.mark.slow


@pytest.mark.models
def test_stereo_call_is_one_timeline_with_both_roles(sample_media):
    timeline = analyze_call(sample_media / "call_stereo.flac", transcript=sample_media / "call_stereo.csv")
    seg = timeline.segments
    assert list(seg["speaker"]) == ["agent", "customer", "agent"]
    assert list(seg["segment_id"]) == [0, 1, 2] and seg["start"].is_monotonic_increasing
    assert "third time my order" in seg.loc[1, "text"]
    assert seg["audio_present"].all() and seg["text_present"].all()
    assert set(timeline.words["segment_id"]) == {0, 1, 2}
    summary = call_summary(seg).set_index(["section", "subject", "metric"])
    assert summary.loc[("speaker", "customer", "talk_seconds"), "value"] == pytest.approx(8.383 - 5.154, abs=0.01)
    assert summary.loc[("call", "call", "overlaps"), "value"] == 0
    assert summary.loc[("customer", "customer", "sentiment_start"), "value"] < 0  # "I am really angry!"
    assert summary.loc[("escalation", "customer", "escalation"), "start"] == pytest.approx(5.154, abs=0.01)


@pytest.mark.models
def test_mono_call_takes_roles_from_the_transcript_and_can_leave_the_agent_out(sample_media):
    media, srt = sample_media / "interview.mp4", sample_media / "interview.srt"
    timeline = analyze_call(media, transcript=srt)  # HOST speaks first: the agent
    assert timeline.metadata["roles"] == {"HOST": "agent", "GUEST": "customer"}
    assert list(timeline.segments["speaker"]) == ["agent", "customer", "agent", "customer", "agent"]
    only = analyze_call(media, transcript=srt, customer_only=True)
    assert set(only.segments["speaker"]) == {"customer"} and len(only.segments) == 2


@pytest.mark.models
def test_stereo_customer_only_leaves_the_agent_out(sample_media):
    timeline = analyze_call(sample_media / "call_stereo.flac", transcript=sample_media / "call_stereo.csv", customer_only=True)
    assert set(timeline.segments["speaker"]) == {"customer"}


@pytest.mark.models
def test_interview_command_writes_the_tables_a_summary_and_a_report(sample_media, tmp_path, capsys):
    out = tmp_path / "interview"
    assert main(["interview", str(sample_media / "interview.mp4"), "--transcript", str(sample_media / "interview.srt"),
                 "--interviewee", "GUEST", "--out", str(out), "--language", "en"]) == 0
    printed = capsys.readouterr().out
    assert "talk_share" in printed and "answer" in printed
    summary = load_summary(out)
    answers = summary[summary["section"] == "answer"]
    assert len(answers) == 2 and set(answers["subject"]) == {"GUEST"}
    segments = load_timeline(out).segments
    assert segments["face_present"].any()
    # the sample's face is a photo: its mouth never moves with the voice, so no face is tied to a speaker
    assert segments["face_speaker_id"].isna().all() and segments["speaker_face_id"].isna().all()
    assert interview_summary(load_timeline(out).segments, interviewee="GUEST").shape == summary.shape
    assert main(["report", str(out), "--out", str(tmp_path / "report.html")]) == 0
    assert (tmp_path / "report.png").stat().st_size > 10_000


@pytest.mark.models
def test_classroom_reports_attention_without_any_emotion(sample_media):
    timeline = analyze_classroom(sample_media / "interview.mp4", fps=1.0, bin_seconds=10.0)
    frames = timeline.frames
    assert not any(c.startswith("face_") and c not in ("face_present", "face_id") for c in frames.columns)
    assert frames["face_present"].all()
    assert list(timeline.segments["start"]) == [0.0, 10.0, 20.0]
    summary = classroom_summary(frames, bin_seconds=10.0)
    room = summary[(summary["section"] == "room") & (summary["metric"] == "engagement_mean")]
    assert list(room["start"]) == [0.0, 10.0, 20.0] and room["value"].between(0.5, 1.0).all()


@pytest.mark.models
def test_classroom_follows_two_faces_and_the_room(sample_media, tmp_path):
    face = cv2.cvtColor(cv2.resize(cv2.imread(str(sample_media / "face.jpg")), (160, 160)), cv2.COLOR_BGR2RGB)
    canvas = np.full((200, 420, 3), 90, dtype=np.uint8)
    frames = [place(place(canvas, face, 10 + i, 20), face, 250 - i, 20) for i in range(30)]  # 3 s at 10 fps
    timeline = analyze_classroom(write_rgb_video(tmp_path / "two.mp4", frames), fps=2.0, bin_seconds=1.0)
    summary = classroom_summary(timeline.frames, bin_seconds=1.0)
    faces = summary[(summary["section"] == "face") & (summary["metric"] == "engagement_mean")]
    assert faces["subject"].tolist() == ["face 0", "face 1"]
    room = summary[(summary["section"] == "room") & (summary["metric"] == "faces_seen")]
    assert room["value"].tolist() == [2, 2, 2]


@pytest.mark.models
def test_classroom_command_follows_the_four_faces_of_the_sample(sample_media, tmp_path, capsys):
    """The README's command on sample_media/classroom.mp4 (face.jpg four times, each moving a little)."""
    out = tmp_path / "classroom"
    assert main(["classroom", str(sample_media / "classroom.mp4"), "--bin", "5", "--out", str(out)]) == 0
    assert "faces_seen" in capsys.readouterr().out
    frames = load_timeline(out).frames
    assert frames["time"].nunique() == 20 and frames["face_present"].all() and frames.groupby("time").size().eq(4).all()
    assert sorted(frames["face_id"].unique()) == [0, 1, 2, 3]  # one track per face, none lost or split
    summary = load_summary(out)
    room = summary[(summary["section"] == "room") & (summary["metric"] == "faces_seen")]
    assert room["start"].tolist() == [0.0, 5.0] and room["value"].tolist() == [4, 4]


def test_classroom_rejects_a_bad_bin_in_one_line(sample_media, tmp_path, capsys):
    assert main(["classroom", str(sample_media / "interview.mp4"), "--bin", "0", "--out", str(tmp_path / "c")]) == 2
    assert capsys.readouterr().err.strip() == "mser: bin_seconds must be positive, not 0.0"
