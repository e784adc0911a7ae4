"""Use-case metrics on tables with known answers, the summary table beside a timeline, and the report
(self-contained HTML opened in a real headless Chromium, and a PNG)."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pandas as pd
import pytest
from browser import find_chromium, open_page
from timeline_factory import segments_table, synthetic_timeline

from multimodal_ser import Timeline
from multimodal_ser.cli import main
from multimodal_ser.errors import MserError
from multimodal_ser.report import write_report
from multimodal_ser.timeline import load_summary
from pipelines import conversation as conv
from pipelines.call import assign_roles, call_summary, escalations
from pipelines.classroom import classroom_summary
from pipelines.interview import answer_arcs, interview_summary

# A talks 0-10, B cuts in at 8 (A still has 2 s to say) until 12; nobody 12-16; A 16-20; B says "mm" at 19.8-20.1.
CALL = {"starts": [0.0, 8.0, 16.0, 19.8], "ends": [10.0, 12.0, 20.0, 20.1], "speakers": ["A", "B", "A", "B"]}


def _call(**kwargs) -> pd.DataFrame:
    return segments_table(CALL["starts"], CALL["ends"], CALL["speakers"], **kwargs)


def test_talk_time_counts_each_speakers_seconds():
    talk = conv.talk_time(_call())
    assert talk.loc["A", "seconds"] == pytest.approx(14.0) and talk.loc["B", "seconds"] == pytest.approx(4.3)
    assert talk["share"].sum() == pytest.approx(1.0) and talk.loc["A", "share"] == pytest.approx(14 / 18.3)


def test_overlaps_interruptions_and_silences():
    found = conv.overlaps(_call())
    assert list(zip(found["first"], found["second"])) == [("A", "B"), ("A", "B")]
    assert found["seconds"].tolist() == pytest.approx([2.0, 0.2])
    cuts = conv.interruptions(_call(), min_seconds=0.5)
    assert cuts.to_dict("records") == [{"start": 8.0, "by": "B", "of": "A", "seconds": pytest.approx(2.0)}]
    quiet = conv.silences(_call(), min_seconds=2.0)
    assert quiet.to_dict("records") == [{"start": 12.0, "end": 16.0, "seconds": 4.0}]
    assert conv.silences(_call(), min_seconds=5.0).empty


def test_rows_without_speech_or_speaker_are_ignored():
    segments = segments_table([0.0, 2.0, 4.0], [2.0, 4.0, 6.0], ["A", None, "B"])
    segments.loc[2, "speech"] = False
    assert conv.talk_time(segments).index.tolist() == ["A"]


def test_roles_from_names_given_agent_or_first_speaker():
    assert assign_roles(["Customer", "Agent"]) == {"Customer": "customer", "Agent": "agent"}
    assert assign_roles(["SPEAKER_00", "SPEAKER_01"]) == {"SPEAKER_00": "agent", "SPEAKER_01": "customer"}
    assert assign_roles(["x", "y", "z"], agent="y") == {"x": "customer", "y": "agent", "z": "customer"}
    with pytest.raises(MserError, match="not a speaker"):
        assign_roles(["x", "y"], agent="q")
    with pytest.raises(MserError, match="no speakers"):
        assign_roles([])


def test_customer_trajectory_and_escalations():
    speakers = ["agent", "customer", "agent", "customer", "customer", "agent", "customer"]
    labels = ["neutral", "neutral", "neutral", "angry", "angry", "neutral", "happy"]
    sentiments = ["neutral", "positive", "neutral", "negative", "negative", "neutral", "positive"]
    starts = [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
    segments = segments_table(starts, [s + 2 for s in starts], speakers, labels=labels, sentiments=sentiments)
    turned = escalations(segments)
    assert turned["start"].tolist() == [6.0] and turned["label"].tolist() == ["angry"]
    summary = call_summary(segments).set_index(["section", "subject", "metric"])
    assert summary.loc[("customer", "customer", "sentiment_start"), "value"] == 1.0  # first third of 4 rows: 1 row
    assert summary.loc[("customer", "customer", "sentiment_end"), "value"] == 1.0
    assert summary.loc[("customer", "customer", "negative_share_start"), "value"] == 0.0
    assert summary.loc[("speaker", "customer", "talk_share"), "value"] == pytest.approx(8 / 14)
    assert summary.loc[("call", "call", "overlaps"), "value"] == 0
    assert summary.loc[("escalation", "customer", "escalation"), "inferred_from"].startswith("fused label")
    assert list(summary.reset_index().columns) == list(conv.SUMMARY_COLUMNS)


def test_interview_answers_and_changes():
    speakers = ["HOST", "GUEST", "GUEST", "HOST", "GUEST"]
    labels = ["neutral", "happy", "sad", "neutral", "sad"]
    sentiments = ["neutral", "positive", "negative", "neutral", "negative"]
    starts = [0.0, 3.0, 6.0, 9.0, 12.0]
    segments = segments_table(starts, [s + 3 for s in starts], speakers, labels=labels, sentiments=sentiments)
    arcs = answer_arcs(segments, "GUEST")
    assert arcs["arc"].tolist() == ["happy -> sad", "sad"]
    assert arcs["sentiment_start"].tolist() == [1.0, -1.0] and arcs["sentiment_end"].tolist() == [-1.0, -1.0]
    changes = conv.change_moments(segments)
    assert changes[["speaker", "start", "before", "after"]].values.tolist() == [["GUEST", 6.0, "happy", "sad"]]
    summary = interview_summary(segments)  # GUEST talks longest: the interviewee
    answers = summary[summary["section"] == "answer"]
    assert answers["subject"].unique().tolist() == ["GUEST"] and answers["value"].tolist() == [-2.0, 0.0]
    assert summary.loc[(summary["subject"] == "GUEST") & (summary["metric"] == "share_sad"), "value"].item() == pytest.approx(2 / 3)


def test_classroom_summary_per_face_and_room():
    frames = pd.DataFrame({
        "time": [0.0, 0.0, 0.5, 0.5, 1.0, 1.0, 1.5],
        "face_id": [0, 1, 0, 1, 0, 1, -1],
        "engagement": [1.0, 0.0, 1.0, 0.0, 0.5, 0.5, np.nan],
        "gaze_on_camera": [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, np.nan],
        "face_present": [True, True, True, True, True, True, False],
    })
    summary = classroom_summary(frames, bin_seconds=1.0).set_index(["section", "subject", "metric", "start"])
    assert summary.loc[("face", "face 0", "engagement_mean", np.nan), "value"].item() == pytest.approx(2.5 / 3)
    assert summary.loc[("face", "face 1", "looking_share", np.nan), "value"].item() == pytest.approx(1 / 3)
    assert summary.loc[("face", "face 0", "seconds_seen", np.nan), "value"].item() == pytest.approx(1.5)
    assert summary.loc[("room", "room", "engagement_mean", 0.0), "value"] == pytest.approx(0.5)
    assert summary.loc[("room", "room", "faces_seen", 1.0), "value"] == 2


def test_summary_is_saved_with_the_timeline_and_replaced_with_it(tmp_path):
    timeline = synthetic_timeline(20)
    summary = call_summary(timeline.segments)
    timeline.save(tmp_path / "call", summary=summary)
    loaded = load_summary(tmp_path / "call")
    assert list(loaded.columns) == list(conv.SUMMARY_COLUMNS) and loaded["metric"].tolist() == summary["metric"].tolist()
    np.testing.assert_array_equal(loaded["value"], summary["value"])
    timeline.save(tmp_path / "call")  # a use case's folder can be written again, as a whole
    assert load_summary(tmp_path / "call") is None and Timeline.load(tmp_path / "call").segments.shape == timeline.segments.shape


def _report(tmp_path, seconds: float, names=("one",)):
    folders = []
    for i, name in enumerate(names):
        timeline = synthetic_timeline(seconds, seed=i)
        timeline.save(tmp_path / name, summary=call_summary(timeline.segments))
        folders.append(tmp_path / name)
    return write_report(folders, tmp_path / "report.html")


def test_report_is_self_contained_and_states_each_lanes_source(tmp_path):
    html, png = _report(tmp_path, 60, names=("one", "two"))
    text = html.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text) and "@import" not in text
    data = json.loads(re.search(r'<script id=mser-data type="application/json">(.*?)</script>', text, re.DOTALL).group(1))
    assert [r["name"] for r in data] == ["one", "two"] and data[0]["present"]["engagement"]
    assert data[0]["speakers"] == ["agent", "customer"] and data[0]["spkFace"] == [0, 1]
    assert "the voice (audio_label" in text and "face geometry" in text and "<summary><b>Summary (call)</b>" in text
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_of_a_folder_that_is_no_timeline_names_it(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(tmp_path / "r.html")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mser: ") and "empty" in err[0]
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "r.png").exists()


@pytest.fixture(scope="module")
def chromium():
    found = find_chromium()
    if found is None:
        pytest.skip("no Chromium found (install the OS package 'chromium', or set $CHROMIUM); .ci/run installs it")
    return found


@pytest.mark.slow
def test_report_of_30_minutes_opens_in_chromium_fast_small_and_without_errors(tmp_path, chromium):
    html, _ = _report(tmp_path, 30 * 60)
    assert html.stat().st_size < 5_000_000
    dom, console = open_page(chromium, html, tmp_path / "shot.png")
    assert console == []
    body = re.search(r"<body([^>]*)>", dom).group(1)
    assert 'data-rendered="1"' in body and "data-error" not in body
    assert int(re.search(r'data-render-ms="(\d+)"', body).group(1)) < 2000
    from PIL import Image

    pixels = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB"), dtype=float)
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # lanes drawn, not a blank page


CLICK = """<script>
var rec = JSON.parse(document.getElementById("mser-data").textContent)[0], c = document.querySelector("canvas");
var box = c.getBoundingClientRect(), t = (rec.seg.s[10] + rec.seg.e[10]) / 2;
var at = {clientX: box.left + 170 + t / rec.duration * (box.width - 170), clientY: box.top + 30 * 5 + 15, bubbles: true};
c.dispatchEvent(new MouseEvent("mousedown", at));
c.dispatchEvent(new MouseEvent("mouseup", at));
</script></body>"""
"""Clicks the middle of the 11th segment on the fused lane (the sixth, 30 px each, after a 170 px label column)."""


@pytest.mark.slow
def test_clicking_a_segment_shows_what_each_source_said(tmp_path, chromium):
    html, _ = _report(tmp_path, 120)
    page = tmp_path / "clicked.html"
    page.write_text(html.read_text().replace("</body>", CLICK))
    dom, console = open_page(chromium, page, tmp_path / "shot.png")
    assert console == []
    detail = re.search(r'<div class="detail">(.*?)</div>', dom, re.DOTALL).group(1)
    assert "voice: " in detail and "words: " in detail and "<b>fused: " in detail and "agreement" in detail
    assert re.match(r"<b>[0-9:.-]+</b> customer \(face 1\)<br>", detail)  # the speaker and the face tied to them


@pytest.mark.slow
def test_a_script_error_is_caught(tmp_path, chromium):
    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>undefinedFunction();</script></body></html>")
    _, console = open_page(chromium, page, tmp_path / "shot.png")
    assert any("undefinedFunction" in m for m in console)


def test_chromium_lookup_honours_the_environment(monkeypatch):
    monkeypatch.setenv("CHROMIUM", "/opt/my/chromium")
    assert find_chromium() == "/opt/my/chromium"
    monkeypatch.delenv("CHROMIUM")
    assert find_chromium() is None or os.path.isabs(find_chromium())
