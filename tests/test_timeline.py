import errno
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from multimodal_ser import timeline
from multimodal_ser.errors import MserError
from multimodal_ser.grid import absent_table, make_grid, modality_table
from multimodal_ser.labels import EMOTIONS
from multimodal_ser.timeline import Timeline, _writer_prefix, load_timeline, read_provenance


def _timeline():
    grid = make_grid([0.0, 2.0], [2.0, 3.5], speakers=["A", None], texts=["hello there", ""])
    probs = np.tile(np.eye(len(EMOTIONS))[1], (2, 1))
    audio = modality_table("audio", probs, np.array([True, False]), np.ones((2, 8)))
    segments = pd.concat([grid, audio, absent_table("face", 2)], axis=1)
    words = pd.DataFrame({"word": ["hello", "there"], "start": [0.1, 0.6], "end": [0.5, 1.0], "probability": [0.9, 0.8], "segment_id": [0, 0], "speaker": ["A", "A"]})
    return Timeline(segments=segments, words=words, frames=pd.DataFrame({"time": [0.0], "face_present": [False]}), metadata={"version": "test", "source": {"sha256": "abc"}})


def test_round_trip_keeps_rows_and_provenance(tmp_path):
    _timeline().save(tmp_path / "out")
    loaded = load_timeline(tmp_path / "out")
    assert list(loaded.segments["segment_id"]) == [0, 1]
    assert loaded.segments["audio_present"].tolist() == [True, False]
    assert pd.isna(loaded.segments.loc[1, "audio_label"]) and np.isnan(loaded.segments.loc[1, "audio_happy"])
    assert loaded.metadata["source"]["sha256"] == "abc"
    assert list(loaded.words["word"]) == ["hello", "there"]


def test_embeddings_are_float32_lists_of_a_declared_size(tmp_path):
    _timeline().save(tmp_path)
    schema = pq.read_schema(tmp_path / "segments.parquet")
    assert schema.field("audio_embedding").type == pa.list_(pa.float32())
    assert schema.field("audio_embedding").metadata == {b"dim": b"8"}
    assert schema.field("face_embedding").metadata == {b"dim": b"0"}  # face absent: all null
    loaded = load_timeline(tmp_path)
    assert len(loaded.segments.loc[0, "audio_embedding"]) == 8 and loaded.segments.loc[1, "audio_embedding"] is None
    assert read_provenance(tmp_path / "frames.parquet")["version"] == "test"


def test_a_failed_save_leaves_the_old_timeline_whole(tmp_path):
    timeline = _timeline()
    timeline.save(tmp_path / "out")
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    timeline.segments["audio_embedding"] = [np.ones(8), np.ones(3)]  # inconsistent sizes: write fails
    timeline.segments["audio_present"] = [True, True]
    with pytest.raises(ValueError, match="mixes embedding sizes"):
        timeline.save(tmp_path / "out")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_save_that_dies_after_one_table_changes_nothing(tmp_path, monkeypatch):
    _timeline().save(tmp_path / "out")
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    written = []

    def write_then_die(table, where):
        if written:
            raise OSError(28, "No space left on device")
        written.append(where)
        real_write(table, where)

    real_write = pq.write_table
    monkeypatch.setattr(pq, "write_table", write_then_die)
    with pytest.raises(MserError, match="out: cannot write the timeline there"):
        _timeline().save(tmp_path / "out")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_replacing_a_timeline_swaps_the_whole_folder(tmp_path, monkeypatch):
    _timeline().save(tmp_path / "out")
    first = read_provenance(tmp_path / "out" / "segments.parquet")["save_id"]
    renames = []
    real_rename = os.rename
    monkeypatch.setattr(os, "rename", lambda a, b: (renames.append((Path(a).name, Path(b).name)), real_rename(a, b))[1])
    _timeline().save(tmp_path / "out")
    ids = {read_provenance(tmp_path / "out" / f"{t}.parquet")["save_id"] for t in ("segments", "words", "frames")}
    assert len(ids) == 1 and ids != {first}
    assert all(not name.endswith(".parquet") for pair in renames for name in pair)  # folders moved, never single tables
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_replacing_a_timeline_never_leaves_its_name_missing(tmp_path, monkeypatch):
    """Old and new folders are swapped in one step (renameat2): no instant without ``out``."""
    _timeline().save(tmp_path / "out")
    real_rename = os.rename

    def rename(a, b):
        if Path(b).name.endswith(".old"):
            raise AssertionError("the old timeline was renamed aside: 'out' was missing for a moment")
        real_rename(a, b)

    monkeypatch.setattr(os, "rename", rename)
    _timeline().save(tmp_path / "out")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    load_timeline(tmp_path / "out")


def test_a_failed_swap_puts_the_old_timeline_back(tmp_path, monkeypatch):
    """Where the file system cannot swap, the old folder goes aside first and comes back on failure."""
    _timeline().save(tmp_path / "out")
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    real_rename = os.rename

    def cannot_swap(a, b):
        raise OSError(errno.ENOTSUP, "not supported")

    monkeypatch.setattr(timeline, "exchange_paths", cannot_swap)

    def rename(a, b):
        if Path(a).name.endswith(".tmp"):
            raise OSError(5, "Input/output error")
        real_rename(a, b)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(MserError, match="cannot write the timeline"):
        _timeline().save(tmp_path / "out")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_tables_of_different_saves_are_refused(tmp_path):
    _timeline().save(tmp_path / "a")
    _timeline().save(tmp_path / "b")
    shutil.copyfile(tmp_path / "b" / "words.parquet", tmp_path / "a" / "words.parquet")
    with pytest.raises(MserError, match="different saves"):
        load_timeline(tmp_path / "a")


def test_a_corrupt_table_is_an_mser_error(tmp_path):
    _timeline().save(tmp_path / "out")
    (tmp_path / "out" / "frames.parquet").write_bytes(b"PAR1 garbage")
    with pytest.raises(MserError, match="frames.parquet: not a readable Parquet table"):
        load_timeline(tmp_path / "out")


def test_save_never_deletes_what_is_not_a_timeline(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "interview.mp4").write_bytes(b"precious")
    with pytest.raises(MserError, match="holds other files \\(interview.mp4\\)"):
        _timeline().save(tmp_path / "mine")
    (tmp_path / "file").write_text("x")
    with pytest.raises(MserError, match="exists and is not a folder"):
        _timeline().save(tmp_path / "file")
    assert (tmp_path / "mine" / "interview.mp4").read_bytes() == b"precious"


def test_loading_an_incomplete_folder_says_what_is_missing(tmp_path):
    with pytest.raises(MserError, match="segments.parquet: missing"):
        load_timeline(tmp_path)


def test_modality_table_checks_shapes():
    with pytest.raises(ValueError, match=r"shape \(2, 7\)"):
        modality_table("text", np.ones((2, 3)), np.array([True, True]))


def test_saved_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    _timeline().save(tmp_path)
    mask = os.umask(0)
    os.umask(mask)
    mode = stat.S_IMODE((tmp_path / "segments.parquet").stat().st_mode)
    assert mode == 0o666 & ~mask


def test_load_is_the_classmethod_of_a_saved_timeline(tmp_path):
    _timeline().save(tmp_path)
    assert Timeline.load(tmp_path).segments.equals(load_timeline(tmp_path).segments)


def test_concat_interleaves_two_channels_and_keeps_each_word_with_its_segment():
    agent = _timeline()
    customer = _timeline()
    customer.segments = customer.segments.assign(start=[1.0, 5.0], end=[1.5, 6.0], speaker=["B", None])
    customer.words = customer.words.assign(start=[1.1, 1.2], end=[1.15, 1.4], speaker=["B", "B"], word=["yes", "indeed"])
    call = Timeline.concat([agent, customer], metadata={"pipeline": "test"})
    assert call.segments["start"].tolist() == [0.0, 1.0, 2.0, 5.0]
    assert call.segments["segment_id"].tolist() == [0, 1, 2, 3]
    by_word = dict(zip(call.words["word"], call.words["segment_id"]))
    assert by_word == {"hello": 0, "there": 0, "yes": 1, "indeed": 1}
    assert call.words["start"].is_monotonic_increasing and len(call.frames) == 2
    with pytest.raises(ValueError, match="at least one"):
        Timeline.concat([], metadata={})


def test_leftovers_of_a_killed_writer_are_removed_by_the_next_save(tmp_path):
    """A SIGKILL mid-save leaves a hidden .tmp (or .old) folder; only a dead writer's are removed."""
    finished = subprocess.Popen(["true"])
    finished.wait()
    dead = finished.pid  # reaped: no process has this id now
    killed = tmp_path / f"{_writer_prefix(tmp_path / 'out', dead)}abcd1234.tmp"
    aside = tmp_path / f"{_writer_prefix(tmp_path / 'out', dead)}abcd1234.old"
    alive = tmp_path / f"{_writer_prefix(tmp_path / 'out', os.getpid())}efgh5678.tmp"
    for folder in (killed, aside, alive):
        folder.mkdir()
        (folder / "segments.parquet").write_bytes(b"half")
    _timeline().save(tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, "out"])
