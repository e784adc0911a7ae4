"""The use-case pipelines on the project's own sample media."""

import pytest

from pipelines.call_center import analyze_call, summarize
from pipelines.classroom import engagement_timeline

pytestmark = pytest.mark.slow


@pytest.mark.models
def test_stereo_call_is_one_timeline_with_both_speakers(sample_media):
    timeline = analyze_call(sample_media / "call_stereo.flac", transcript=sample_media / "call_stereo.csv")
    seg = timeline.segments
    assert list(seg["speaker"]) == ["agent", "customer", "agent"]
    assert list(seg["segment_id"]) == [0, 1, 2] and seg["start"].is_monotonic_increasing
    assert "third time my order" in seg.loc[1, "text"]
    assert seg["audio_present"].all() and seg["text_present"].all()
    assert set(timeline.words["segment_id"]) == {0, 1, 2}
    summary = summarize(seg)
    assert summary["customer"]["sentiment_share"]["negative"] == 1.0
    assert summary["customer"]["negative_moments"] == [pytest.approx(5.15, abs=0.01)]


@pytest.mark.models
def test_customer_only_leaves_the_agent_out(sample_media):
    timeline = analyze_call(sample_media / "call_stereo.flac", transcript=sample_media / "call_stereo.csv", customer_only=True)
    assert set(timeline.segments["speaker"]) == {"customer"}


@pytest.mark.models
def test_classroom_reports_attention_without_any_emotion(sample_media):
    frames, bins = engagement_timeline(sample_media / "interview.mp4", fps=1.0, bin_seconds=10.0)
    assert not any(c.startswith("face_") and c != "face_present" and c != "face_id" for c in frames.columns)
    assert frames["face_present"].all()
    assert list(bins["bin_start"]) == [0.0, 10.0, 20.0]
    assert bins["engagement_mean"].between(0.5, 1.0).all()
