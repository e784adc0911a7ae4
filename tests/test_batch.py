"""``mser batch``: inputs, item identity, the dataset's commit protocol, resume after a real
``kill -9``, and the local and Ray engines (the dataset read back by DuckDB and pyarrow)."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from media_factory import write_wav

from multimodal_ser import AnalysisOptions, ManifestError, MserError
from multimodal_ser.batch import open_table, read_inputs, run_batch
from multimodal_ser.batch.dataset import RECORDS, BatchDataset
from multimodal_ser.batch.engines import WORKER_DIED, Outcome, run_local, run_ray
from multimodal_ser.batch.items import make_item, recording_id
from multimodal_ser.cli import main
from multimodal_ser.timeline import Timeline

REPO = Path(__file__).resolve().parents[1]
FAST = {"modalities": ("text",), "asr_model": "tiny.en", "language": "en"}
"""options that make a real analysis quick: ASR (tiny.en) and the text branch."""
FAST_FLAGS = ["--modalities", "text", "--asr-model", "tiny.en", "--language", "en"]


def _speech(folder: Path, sample_media: Path, name: str, gain: float) -> Path:
    """A WAV of the interview's speech at ``gain``: distinct bytes (and so a distinct recording) per gain."""
    from multimodal_ser.media import load_audio

    return write_wav(folder / name, load_audio(sample_media / "interview.mp4")[: 16000 * 9] * gain)


def _toy_timeline(n: int) -> Timeline:
    segments = pd.DataFrame({"segment_id": np.arange(n), "start": np.arange(n, dtype=float), "end": np.arange(n) + 1.0, "text": ["hi"] * n})
    words = pd.DataFrame({"word": ["hi"] * n, "start": np.arange(n, dtype=float), "end": np.arange(n) + 0.5, "segment_id": np.arange(n)})
    return Timeline(segments=segments, words=words, frames=pd.DataFrame(), metadata={"notes": []})


# --- inputs and identity -----------------------------------------------------------------------


def test_inputs_from_a_manifest_relative_to_it_and_from_globs(tmp_path):
    (tmp_path / "media").mkdir()
    for name in ("a.wav", "b.wav"):
        (tmp_path / "media" / name).write_bytes(b"x")
    manifest = tmp_path / "list.csv"
    manifest.write_text("path,label\nmedia/a.wav,happy\n")
    paths = read_inputs(manifest=manifest, patterns=[str(tmp_path / "**" / "*.wav")])
    assert paths == [tmp_path / "media" / "a.wav", tmp_path / "media" / "b.wav"]  # a.wav once


@pytest.mark.parametrize(
    ("text", "message"),
    [("file,label\na.wav,happy\n", "'path' column"), ("path\n", "at least one row"), ("path,label\n,happy\n", "line 2 has no path")],
)
def test_a_bad_manifest_is_one_line_naming_it(tmp_path, text, message):
    manifest = tmp_path / "list.csv"
    manifest.write_text(text)
    with pytest.raises(ManifestError, match=message) as info:
        read_inputs(manifest=manifest)
    assert str(manifest) in str(info.value) and "\n" not in str(info.value)


def test_a_pattern_matching_nothing_is_refused(tmp_path):
    with pytest.raises(ManifestError, match="matches no file"):
        read_inputs(patterns=[str(tmp_path / "*.mp4")])


def test_identity_follows_content_and_options_not_threads_or_place(tmp_path):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    options = AnalysisOptions(**FAST)
    assert make_item(a, options).recording_id == make_item(b, options).recording_id
    assert make_item(a, options).recording_id == make_item(a, AnalysisOptions(**FAST, threads=3)).recording_id
    assert make_item(a, options).recording_id != make_item(a, AnalysisOptions(**{**FAST, "language": "de"})).recording_id
    b.write_bytes(b"changed")
    assert make_item(b, options).recording_id != make_item(a, options).recording_id
    missing = make_item(tmp_path / "gone.wav", options)
    assert missing.recording_id is None and "gone.wav: no such file" in missing.error



def test_identity_follows_the_voice_reference_by_its_content_not_its_place(tmp_path):
    a = tmp_path / "a.wav"
    a.write_bytes(b"same")
    first, second = tmp_path / "calls.npz", tmp_path / "copy.npz"
    first.write_bytes(b"a reference")
    second.write_bytes(b"a reference")
    modalities = {**FAST, "modalities": ("audio", "text")}
    plain = make_item(a, AnalysisOptions(**modalities)).recording_id
    with_first = make_item(a, AnalysisOptions(**modalities, voice_reference=str(first))).recording_id
    assert with_first != plain
    assert with_first == make_item(a, AnalysisOptions(**modalities, voice_reference=str(second))).recording_id
    second.write_bytes(b"another collection")
    assert with_first != make_item(a, AnalysisOptions(**modalities, voice_reference=str(second))).recording_id


# --- the dataset's commit protocol ---------------------------------------------------------------


def test_committed_items_form_one_table_and_uncommitted_ones_are_removed(tmp_path):
    import duckdb

    options = AnalysisOptions(**FAST)
    dataset = BatchDataset(tmp_path / "out")
    items = []
    for name, n in (("a.wav", 2), ("b.wav", 3)):
        (tmp_path / name).write_bytes(name.encode())
        items.append(make_item(tmp_path / name, options))
        dataset.commit(items[-1], _toy_timeline(n), seconds=1.5)
    # what a run killed between the renames and the record leaves behind
    orphan = dataset.partition("segments", "0123456789abcdef")
    orphan.mkdir()
    (orphan / "part.parquet").write_bytes(b"half")
    (tmp_path / "out" / "_staging" / "x").mkdir(parents=True)
    with dataset.lock():
        assert set(dataset.prepare()) == {i.recording_id for i in items}
    assert not orphan.exists() and not (tmp_path / "out" / "_staging").exists()

    rows = duckdb.sql(f"SELECT recording_id, count(*) AS n FROM read_parquet('{tmp_path}/out/segments/*/*.parquet') GROUP BY 1").fetchall()
    assert dict(rows) == {items[0].recording_id: 2, items[1].recording_id: 3}
    words = open_table(tmp_path / "out", "words").to_table()
    assert words.num_rows == 5 and set(words.column("source_path").to_pylist()) == {str(i.path.resolve()) for i in items}

    (tmp_path / "b.wav").write_bytes(b"new content")  # the file changed: its old result goes
    assert dataset.remove_superseded([make_item(tmp_path / "a.wav", options), make_item(tmp_path / "b.wav", options)]) == [items[1].recording_id]
    assert set(dataset.records()) == {items[0].recording_id}
    assert not dataset.partition("words", items[1].recording_id).exists()


def test_a_missing_file_is_a_failed_row_and_the_batch_goes_on(tmp_path, capsys):
    out = tmp_path / "out"
    status = main(["batch", str(tmp_path / "gone.mp4"), "--out", str(out), *FAST_FLAGS])
    assert status == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"mser: {tmp_path / 'gone.mp4'}: no such file"
    table = pd.read_parquet(out / "status.parquet")
    assert table["state"].tolist() == ["failed"] and table["reason"][0].endswith("no such file")


def test_a_second_batch_on_the_same_folder_is_refused(tmp_path):
    with BatchDataset(tmp_path / "out").lock():
        with pytest.raises(MserError, match="another mser batch is writing there"):
            run_batch([tmp_path / "a.wav"], tmp_path / "out", options=AnalysisOptions(**FAST))
    assert run_batch([tmp_path / "a.wav"], tmp_path / "out", options=AnalysisOptions(**FAST))["state"].tolist() == ["failed"]


def test_address_without_ray_is_refused(tmp_path, capsys):
    assert main(["batch", "x.mp4", "--out", str(tmp_path), "--address", "auto"]) == 2
    assert "--address needs --engine ray" in capsys.readouterr().err


# --- a worker that dies -------------------------------------------------------------------------


def _work_or_die(job):
    """A worker's work in the tests below: its process dies on a file named ``crash*``; any other
    item succeeds at once (reason ``ok <name>``) without analysing anything."""
    if any(path.name.startswith("crash") for _, path in job):
        os._exit(9)  # as a segfault or the OOM killer would: no exception, no cleanup
    return [Outcome(index, None, f"ok {path.name}", 0.0) for index, path in job]


class _ActorOrDie:
    """A Ray actor class whose process dies as :func:`_work_or_die` does."""

    def __init__(self, options):
        pass

    def analyze(self, job):
        return _work_or_die(job)


ITEMS = [(i, Path(name)) for i, name in enumerate(["a.wav", "crash.wav", "b.wav", "c.wav", "d.wav", "e.wav"])]
EXPECTED = {i: f"crash.wav: {WORKER_DIED}" if p.name == "crash.wav" else f"ok {p.name}" for i, p in ITEMS}
ALONE = [(item,) for item in ITEMS]
PACKED = [tuple(ITEMS[:3]), tuple(ITEMS[3:5]), tuple(ITEMS[5:])]
"""jobs of several items, as with the pack option: the crash takes a and b down with it."""


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("jobs", [ALONE, PACKED], ids=["alone", "packed"])
def test_a_dead_worker_fails_only_its_item_and_the_batch_goes_on(workers, jobs):
    outcomes = [(o.index, o.reason) for o in run_local(jobs, AnalysisOptions(threads=1), workers, work=_work_or_die)]
    assert dict(outcomes) == EXPECTED and len(outcomes) == len(ITEMS)


@pytest.mark.slow
def test_a_dead_ray_actor_fails_only_its_item_and_is_restarted():
    ray = pytest.importorskip("ray")
    here = {"env_vars": {"PYTHONPATH": str(Path(__file__).parent)}}  # the actors import this module
    ray.init(num_cpus=1, include_dashboard=False, logging_level="WARNING", runtime_env=here)
    try:  # one actor: the items after the crash run on it restarted
        outcomes = [[(o.index, o.reason) for o in run_ray(jobs, AnalysisOptions(threads=1), 1, None, worker=_ActorOrDie)] for jobs in (ALONE, PACKED)]
    finally:
        ray.shutdown()
    for each in outcomes:
        assert dict(each) == EXPECTED and len(each) == len(ITEMS)


# --- real runs ---------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.models
def test_kill_9_then_rerun_finishes_the_rest_without_loss_or_duplicates(tmp_path, sample_media):
    media = [_speech(tmp_path, sample_media, f"speech-{i}.wav", gain) for i, gain in enumerate((0.5, 0.7, 0.9))]
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "multimodal_ser.cli", "batch", str(tmp_path / "*.wav"), "--out", str(out), "--workers", "1", *FAST_FLAGS]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not any((out / RECORDS).glob("*.json")):
            assert run.poll() is None, "the batch ended before it could be killed"
            assert time.monotonic() < deadline, "no item finished in 5 minutes"
            time.sleep(0.05)
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # its worker process too (same session)
    assert run.returncode == -signal.SIGKILL
    assert not (out / "status.parquet").exists()
    first = {p.stem for p in (out / RECORDS).glob("*.json")}
    assert 1 <= len(first) < 3

    again = subprocess.run(command, env=env, capture_output=True, text=True)
    assert again.returncode == 1  # bad.wav
    assert again.stderr.splitlines()[0].startswith(f"mser: {tmp_path / 'bad.wav'}: ")
    status = pd.read_parquet(out / "status.parquet").set_index("path")
    assert status.loc[str(tmp_path / "bad.wav"), "state"] == "failed"
    assert set(status.loc[status["recording_id"].isin(first), "state"]) == {"skipped"}
    assert (status["state"] == "done").sum() == 3 - len(first)
    analysed = set(status.loc[status["state"] != "failed", "recording_id"])
    segments = open_table(out, "segments").to_table().to_pandas()
    assert set(segments["recording_id"]) == analysed and len(analysed) == 3
    assert not segments.duplicated(["recording_id", "segment_id"]).any()
    for _, table in segments.groupby("recording_id"):  # each table whole: segments 0..n-1, the last near the 9-s end
        assert sorted(table["segment_id"]) == list(range(len(table))) and table["end"].max() > 8.5
    assert not (out / "_staging").exists()

    _speech(tmp_path, sample_media, "speech-0.wav", 0.6)  # a changed file is analysed again, its old result removed
    subprocess.run(command, env=env, capture_output=True, check=False)
    status = pd.read_parquet(out / "status.parquet").set_index("path")
    assert status.loc[str(media[0]), "state"] == "done"
    assert sorted(status["state"]) == ["done", "failed", "skipped", "skipped"]
    ids = set(open_table(out, "segments").to_table().column("recording_id").to_pylist())
    assert ids == set(status.loc[status["state"] != "failed", "recording_id"]) and len(ids) == 3


@pytest.mark.slow
@pytest.mark.models
def test_local_engine_duplicates_and_rerun(tmp_path, sample_media):
    a = _speech(tmp_path, sample_media, "a.wav", 0.5)
    copy = tmp_path / "copy.wav"
    copy.write_bytes(a.read_bytes())
    options = AnalysisOptions(**FAST)
    status = run_batch([a, copy], tmp_path / "out", options=options, workers=2)
    assert status["state"].tolist() == ["done", "skipped"]
    assert status["reason"][1] == f"same content as {a}"
    assert status["recording_id"][0] == recording_id(status["sha256"][0], options)
    again = run_batch([a, copy], tmp_path / "out", options=options)
    assert again["state"].tolist() == ["skipped", "skipped"] and again["reason"][0] == "done in an earlier run"
    record = json.loads((tmp_path / "out" / RECORDS / f"{status['recording_id'][0]}.json").read_text())
    assert record["sha256"] == status["sha256"][0]


@pytest.mark.slow
@pytest.mark.models
def test_ray_engine_on_a_local_instance_and_the_dataset_in_duckdb(tmp_path, sample_media):
    ray = pytest.importorskip("ray")
    duckdb = pytest.importorskip("duckdb")
    good = _speech(tmp_path, sample_media, "good.wav", 0.5)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really")
    ray.init(num_cpus=1, include_dashboard=False, logging_level="WARNING")
    try:
        status = run_batch([good, bad], tmp_path / "out", options=AnalysisOptions(**FAST, threads=1), engine="ray")
    finally:
        ray.shutdown()
    assert status["state"].tolist() == ["done", "failed"] and status["reason"][1].startswith(f"{bad}: ")
    rid = status["recording_id"][0]
    joined = duckdb.sql(
        f"""SELECT s.recording_id, s.source_path, count(*) AS words
            FROM read_parquet('{tmp_path}/out/words/*/*.parquet', union_by_name=true) w
            JOIN read_parquet('{tmp_path}/out/segments/*/*.parquet', union_by_name=true) s USING (recording_id, segment_id)
            GROUP BY 1, 2"""
    ).fetchall()
    assert len(joined) == 1 and joined[0][:2] == (rid, str(good.resolve())) and joined[0][2] > 5


# --- short recordings encoded together (the pack option) ---------------------------------------


def _pieces(folder: Path, sample_media: Path) -> list[Path]:
    """Three short WAVs of the interview's lines and one of 12 s, longer than a packed recording may be."""
    from multimodal_ser.media import load_audio

    audio = load_audio(sample_media / "interview.mp4")
    spans = {"one.wav": (0.0, 4.6), "two.wav": (4.6, 9.2), "three.wav": (9.2, 13.8), "long.wav": (9.2, 21.2)}
    return [write_wav(folder / name, audio[int(a * 16000) : int(b * 16000)]) for name, (a, b) in spans.items()]


@pytest.mark.slow
@pytest.mark.models
def test_packed_recordings_are_analysed_as_alone_within_the_noise(tmp_path, sample_media, monkeypatch):
    from multimodal_ser.labels import EMOTIONS
    from multimodal_ser.pipeline import Analyzer

    paths = _pieces(tmp_path, sample_media)
    options = AnalysisOptions(modalities=("audio", "text"), language="en", threads=2)
    alone = [Analyzer(options).analyze(path) for path in paths]
    packed_analyzer = Analyzer(dataclasses.replace(options, pack=True))
    packed_analyzer.prepare(paths)
    encoder = packed_analyzer.models.encoder()
    windows = []
    monkeypatch.setattr(encoder, "encode", lambda audio, **kw: windows.append(len(audio)) or type(encoder).encode(encoder, audio, **kw))
    packed = [packed_analyzer.analyze(path) for path in paths]
    assert len(windows) == 1 and windows[0] > 8 * 16000  # only the long recording needed a window of its own
    columns = [f"audio_{label}" for label in EMOTIONS]
    for one, other in zip(alone, packed, strict=True):
        a, b = one.segments[one.segments["speech"]], other.segments[other.segments["speech"]]
        # the decoder may write "I'm" for "I am" from states this close: the words agree, not every letter
        words = [re.findall(r"[\w']+", " ".join(t["text"]).lower()) for t in (a, b)]
        assert len(a) == len(b) >= 1 and difflib.SequenceMatcher(None, *words).ratio() >= 0.8, words
        assert np.abs(a[columns].to_numpy() - b[columns].to_numpy()).max() < 0.1
        assert other.metadata["options"]["pack"] and other.metadata["language"] == "en"


@pytest.mark.slow
@pytest.mark.models
def test_a_packed_batch_commits_every_recording(tmp_path, sample_media):
    paths = _pieces(tmp_path, sample_media)
    status = run_batch([*paths, tmp_path / "missing.wav"], tmp_path / "out", options=AnalysisOptions(**FAST, pack=True), workers=1)
    assert status["state"].tolist() == ["done"] * 4 + ["failed"]
    texts = open_table(tmp_path / "out", "segments").to_table(columns=["source_path", "text"]).to_pandas()
    spoken = texts[texts["text"].fillna("").str.strip() != ""].groupby("source_path")["text"].count()
    assert set(spoken.index) == {str(p.resolve()) for p in paths}
