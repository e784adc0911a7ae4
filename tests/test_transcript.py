import json

import pytest

from multimodal_ser.errors import TranscriptError
from multimodal_ser.transcript import read_transcript

SRT = """1
00:00:00,500 --> 00:00:02,250
ALICE: I am so glad you came.

2
00:00:03,000 --> 00:00:04,000
Bob: Me too.
"""

VTT = """WEBVTT

NOTE made by hand

00:00.500 --> 00:02.250
<v Alice>I am so glad you came.</v>

00:00:03.000 --> 00:00:04.000 align:start
<v Bob>Me too.
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
        ("back.csv", "start,end,text\n2,1,hi\n", "0 <= start < end"),
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
