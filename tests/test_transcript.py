import json

import pytest

from multimodal_ser.errors import TranscriptError
from multimodal_ser.transcript import read_transcript

SRT = """1
00:00:00,500 --> 00:00:02,250
ALICE: I am so glad you came.

2
00:00:03,000 --> 00:00:04,000
BOB: Me too.
"""

VTT = """WEBVTT

NOTE made by hand

00:00.500 --> 00:02.250
<v Alice>I am so glad you came.</v>

00:00:03.000 --> 00:00:04.000 align:start
<v.loud Bob>Me too.
"""


@pytest.mark.parametrize(
    "name, content",
    [
        ("t.srt", SRT),
        ("t.vtt", VTT),
        ("t.json", json.dumps([{"start": 0.5, "end": 2.25, "speaker": "ALICE", "text": "I am so glad you came."}, {"start": 3, "end": 4, "speaker": "Bob", "text": "Me too."}])),
        ("t.csv", "start,end,speaker,text\n0.5,2.25,ALICE,I am so glad you came.\n3,4,Bob,Me too.\n"),
    ],
)
def test_every_format_reads_to_the_same_segments(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    segments = read_transcript(path, media_duration=5.0)
    assert [(s.start, s.end, s.text) for s in segments] == [(0.5, 2.25, "I am so glad you came."), (3.0, 4.0, "Me too.")]
    assert [s.speaker.lower() for s in segments] == ["alice", "bob"]


def test_segments_are_sorted(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"segments": [{"start": 3, "end": 4, "text": "b"}, {"start": 1, "end": 2, "text": "a"}]}))
    assert [s.text for s in read_transcript(path)] == ["a", "b"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("bad.srt", "1\n00:00:01,000 --> soon\nhello\n", "cannot read time"),
        ("bad.srt", "1\nhello there\n", "no 'start --> end'"),
        ("bad.json", "{not json", "not valid JSON"),
        ("bad.json", json.dumps([{"start": 1}]), "needs 'start', 'end' and 'text'"),
        ("bad.csv", "begin,finish,words\n1,2,hi\n", "lacks column"),
        ("bad.csv", "start,end,text\none,2,hi\n", "line 2"),
        ("bad.txt", "hello", "unknown transcript format"),
        ("back.csv", "start,end,text\n2,1,hi\n", "line 2: times must satisfy 0 <= start <= end"),
        ("nan.csv", "start,end,text\n0,1,hi\nnan,2,there\n", "line 3: times must be finite"),
        ("nan.json", '[{"start": NaN, "end": 1, "text": "hi"}]', "segment 0: times must be finite"),
        ("inf.srt", "1\n00:00:01,000 --> 00:00:00,500\nhi\n", "line 2: times must satisfy"),
        ("empty.srt", "  \n\n", "the file is empty"),
        ("empty.json", "[]", "no segments found"),
        ("shape.json", "42", "expected a JSON list"),
        ("shape.json", '[[0, 1, "hi"]]', "segment 0: needs"),
        ("shape.json", '[{"start": 0, "end": 1, "text": ["hi"]}]', "'text' must be a string or null"),
        ("bool.json", '[{"start": true, "end": 1, "text": "hi"}]', "must be numbers of seconds"),
        ("wide.csv", "start,end,text\n0,1,hi,extra\n", "line 2: more fields"),
        ("cue.vtt", "WEBVTT\n\n00:01.000 --> 00:02.000\nhi\n\nstray text\n", "line 6: no 'start --> end'"),
    ],
)
def test_unparsable_transcripts_name_file_and_place(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(TranscriptError, match=message) as caught:
        read_transcript(path)
    assert name in str(caught.value)


def test_transcript_past_the_media_end(tmp_path):
    path = tmp_path / "long.csv"
    path.write_text("start,end,text\n0,2,hi\n8,12,bye\n")
    with pytest.raises(TranscriptError, match="past the media's end"):
        read_transcript(path, media_duration=10.0)


def test_not_utf8_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "latin1.srt"
    path.write_bytes("1\n00:00:00,000 --> 00:00:01,000\nCaf\u00e9 cr\u00e8me\n".encode("latin-1"))
    with pytest.raises(TranscriptError, match=r"latin1.srt: not UTF-8 text \(byte \d+\)") as caught:
        read_transcript(path)
    assert "\n" not in str(caught.value)


def test_a_mixed_case_label_is_text_not_a_speaker(tmp_path):
    path = tmp_path / "t.srt"
    path.write_text("1\n00:00:00,000 --> 00:00:01,000\nNote: the meeting starts now.\n\n2\n00:00:01,000 --> 00:00:02,000\nDR. LEE: Hello.\n")
    first, second = read_transcript(path)
    assert (first.speaker, first.text) == (None, "Note: the meeting starts now.")
    assert (second.speaker, second.text) == ("DR. LEE", "Hello.")


def test_webvtt_voice_spans_are_the_speakers_with_or_without_classes(tmp_path):
    path = tmp_path / "t.vtt"
    path.write_text("WEBVTT\n\n00:00.000 --> 00:01.000\n<v.loud.first Bob Smith>Hi &amp; bye</v>\n\n00:01.000 --> 00:02.000\nNote: no voice\n")
    first, second = read_transcript(path)
    assert (first.speaker, first.text) == ("Bob Smith", "Hi & bye")
    assert (second.speaker, second.text) == (None, "Note: no voice")


def test_json_null_text_and_speaker_are_empty_not_none(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps([{"start": 0, "end": 1, "text": None, "speaker": None}, {"start": 1, "end": 2, "text": "hi", "speaker": 7}]))
    first, second = read_transcript(path)
    assert (first.text, first.speaker) == ("", None)
    assert second.speaker == "7"


def test_a_cue_with_equal_start_and_end_is_widened_not_dropped(tmp_path):
    from multimodal_ser.transcript import MIN_CUE_SECONDS

    path = tmp_path / "t.srt"
    path.write_text("1\n00:00:01,000 --> 00:00:01,000\n[laughter]\n")
    (cue,) = read_transcript(path, media_duration=5.0)
    assert (cue.start, cue.end) == (1.0, pytest.approx(1.0 + MIN_CUE_SECONDS))


def test_a_cue_just_past_the_end_is_clipped_to_it(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("start,end,text\n0,1,hi\n9,10.3,bye\n9.99,9.99,end\n")
    segments = read_transcript(path, media_duration=10.0)
    assert max(s.end for s in segments) == 10.0
    assert all(s.end > s.start for s in segments)
    path.write_text("start,end,text\n10.1,10.3,after\n")
    with pytest.raises(TranscriptError, match="line 2: starts at 10.10 s, at or after the media's end"):
        read_transcript(path, media_duration=10.0)


def test_overlapping_cues_are_kept_as_their_own_segments(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("start,end,speaker,text\n0,3,A,long turn\n1,2,B,interjection\n")
    assert [(s.start, s.end, s.speaker) for s in read_transcript(path)] == [(0, 3, "A"), (1, 2, "B")]
