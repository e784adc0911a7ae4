"""Every bad input and fault tried on ``mser analyze``, as a new user would meet them.

Each case checks the exit status, that stderr is one line naming the file (no traceback), and that
no half-written timeline is left. ``docs/reliability.md`` tabulates these cases: keep them in step.
Unmarked cases stop before any model runs; cases that analyse are marked ``models``; the
subprocess cases (parallel runs, SIGKILL) are ``slow``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from media_factory import declare_mkv_duration, tone, write_clip, write_video, write_wav

from multimodal_ser.cli import main
from multimodal_ser.pipeline import Analyzer
from multimodal_ser.registry import Models
from multimodal_ser.speech_segments import segment_grid
from multimodal_ser.timeline import load_timeline

REPO = Path(__file__).resolve().parents[1]
RNG_SEED = 12


def _analyze(capsys, *argv) -> tuple[int, str]:
    """Run ``mser analyze`` in this process; returns the exit status and stderr (stdout must be empty)."""
    status = main(["analyze", *map(str, argv)])
    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback" not in err
    return status, err


def _assert_one_line(err: str, *fragments: str) -> None:
    assert err.count("\n") == 1 and err.startswith("mser: "), err
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture
def no_models(monkeypatch):
    """Fail the test if the analysis reaches the first model: bad input must be reported before."""

    def refuse(*args, **kwargs):
        raise AssertionError("the analysis started before the bad input was reported")

    monkeypatch.setattr(Analyzer, "_speech_segments", refuse)


# --- media that must be refused --------------------------------------------------------------


def _faststart(path: Path, seconds: float = 8.0) -> Path:
    """An mp4 with its index (moov) first, as streaming sites write it, with picture and sound."""
    return write_video(path, seconds=seconds, audio=tone(seconds), container_options={"movflags": "faststart"})


def _cut(path: Path, fraction: float, name: str) -> Path:
    data = path.read_bytes()
    cut = path.with_name(name)
    cut.write_bytes(data[: int(len(data) * fraction)])
    path.unlink()
    return cut


def _overwrite(path: Path, offset: int, data: bytes) -> Path:
    content = bytearray(path.read_bytes())
    content[offset : offset + len(data)] = data
    path.write_bytes(bytes(content))
    return path


BAD_MEDIA = {
    "missing file": (lambda d: d / "absent.mp4", "no such file"),
    "empty file": (lambda d: _write_bytes(d / "empty.wav", b""), "empty file"),
    "random bytes": (lambda d: _write_bytes(d / "noise.mp4", np.random.default_rng(RNG_SEED).bytes(65536)), "not readable"),
    "text with a media extension": (lambda d: _write_bytes(d / "notes.wav", b"not a recording\n" * 100), "not readable"),
    "a directory": (lambda d: _mkdir(d / "folder.mp4"), "not a file"),
    "faststart mp4 cut at 10%": (lambda d: _cut(_faststart(d / "a.mp4"), 0.1, "cut10.mp4"), "truncated"),
    "faststart mp4 cut at 50%": (lambda d: _cut(_faststart(d / "a.mp4"), 0.5, "cut50.mp4"), "truncated"),
    "faststart mp4 cut at 90%": (lambda d: _cut(_faststart(d / "a.mp4"), 0.9, "cut90.mp4"), "truncated"),
    "mp4 (index at the end) cut at 50%": (
        lambda d: _cut(write_video(d / "a.mp4", seconds=4.0, audio=tone(4.0)), 0.5, "cut.mp4"), "not readable"
    ),
    "wav cut at 50%": (lambda d: _cut(write_wav(d / "a.wav", tone(4.0)), 0.5, "cut.wav"), "truncated"),
    "flac cut at 33%": (lambda d: _cut(write_wav(d / "a.flac", tone(4.0)), 0.33, "cut.flac"), "truncated"),
    "mp4 with a zeroed header": (lambda d: _overwrite(_faststart(d / "zeroed.mp4", 2.0), 0, bytes(64)), "damaged header"),
    "wav with a broken RIFF header": (lambda d: _overwrite(write_wav(d / "broken.wav", tone(2.0)), 0, b"JUNKJUNKJUNK"), "not readable"),
    "mkv declaring 10 hours, holding 2 s": (
        lambda d: declare_mkv_duration(write_video(d / "ten-hours.mkv", seconds=2.0, audio=tone(2.0)), 36_000.0), "truncated"
    ),
    "unicode and spaces in the path, truncated": (
        lambda d: _cut(_faststart(d / "a.mp4"), 0.5, "entrevista cortada ñ 日本.mp4"), "truncated"
    ),
}


def _write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.parametrize("case", BAD_MEDIA)
def test_bad_media_is_one_line_naming_the_file(tmp_path, capsys, no_models, case):
    make, expected = BAD_MEDIA[case]
    media = make(tmp_path)
    before = set(tmp_path.rglob("*"))
    status, err = _analyze(capsys, media, "--out", tmp_path / "out")
    assert status == 1
    _assert_one_line(err, str(media), expected)
    assert set(tmp_path.rglob("*")) == before  # no output, not even a temporary folder


def test_unreadable_file_is_one_line(capsys, no_models):
    """Root reads any file whatever its mode, so the analysis runs as 'nobody' (uid 65534) here."""
    folder = Path(tempfile.mkdtemp(prefix="mser-unreadable-"))  # not under tmp_path: its parents are 0700
    try:
        os.chmod(folder, 0o777)
        media = write_wav(folder / "locked.wav", tone(1.0))
        os.chmod(media, 0)
        if os.geteuid() == 0:
            os.seteuid(65534)
        try:
            # equal weights: 'nobody' reads no file of the package, which may sit in a folder only root can read
            status, err = _analyze(capsys, media, "--out", folder / "out", "--fusion", "equal")
        finally:
            if os.getuid() == 0:
                os.seteuid(0)
        assert status == 1
        _assert_one_line(err, str(media), "cannot be read (Permission denied)")
        assert not (folder / "out").exists()
    finally:
        shutil.rmtree(folder)


def test_video_without_audio_says_so_in_one_line(tmp_path, capsys):
    media = write_video(tmp_path / "silent-film.mp4", seconds=2.0)
    status, err = _analyze(capsys, media, "--out", tmp_path / "out", "--modalities", "audio")
    assert status == 0
    _assert_one_line(err, str(media), "no audio stream")
    segments = load_timeline(tmp_path / "out").segments
    assert len(segments) >= 1 and not segments["audio_present"].any()


@pytest.mark.parametrize("duration", [0.1, 0.49])
def test_a_recording_shorter_than_a_gap_window_is_one_row(duration):
    grid, rows = segment_grid([], duration, gap_window=5.0)
    assert grid[["start", "end"]].values.tolist() == [[0.0, duration]]
    assert not grid["speech"].any() and len(rows) == 0


# --- transcripts that must be refused --------------------------------------------------------

SRT_CUE = "1\n00:00:00,500 --> 00:00:02,000\nhello there\n"

BAD_TRANSCRIPTS = {
    "not UTF-8 (Latin-1)": ("latin1.srt", "1\n00:00:00,000 --> 00:00:01,000\nCafé crème\n".encode("latin-1"), "not UTF-8"),
    "malformed SRT": ("garbage.srt", b"this is not\nan srt file\n", "no 'start --> end' line"),
    "reversed times": ("reversed.srt", b"1\n00:00:02,000 --> 00:00:01,000\nhello\n", "start <= end"),
    "cue far past the end": ("late.srt", b"1\n00:00:10,000 --> 00:00:12,000\nlate\n", "past the media's end"),
    "empty file": ("empty.srt", b"", "empty"),
    "JSON of the wrong shape": ("shape.json", b'{"segments": 5}', "expected a JSON list"),
    "JSON segments without times": ("times.json", b'[{"text": "hi"}]', "needs 'start', 'end' and 'text'"),
    "CSV without the columns": ("columns.csv", b"a,b\n1,2\n", "lacks column(s)"),
    "CSV with NaN times": ("nan.csv", b"start,end,text\nnan,1,hi\n", "finite"),
}


@pytest.mark.parametrize("case", BAD_TRANSCRIPTS)
def test_bad_transcript_is_one_line_naming_it(tmp_path, capsys, no_models, case):
    name, data, expected = BAD_TRANSCRIPTS[case]
    media = write_wav(tmp_path / "talk.wav", tone(3.0))
    transcript = _write_bytes(tmp_path / name, data)
    status, err = _analyze(capsys, media, "--transcript", transcript, "--out", tmp_path / "out")
    assert status == 1
    _assert_one_line(err, str(transcript), expected)
    assert not (tmp_path / "out").exists()


# --- output locations that must be refused ---------------------------------------------------

BAD_OUTPUTS = {
    "an existing file": (lambda d: _write_bytes(d / "taken", b"x"), "exists and is not a folder"),
    "a read-only file system (/sys)": (lambda d: Path("/sys/mser-reliability"), "cannot write there"),
    "a file as parent": (lambda d: _write_bytes(d / "file", b"x") / "out", "cannot write there"),
    "a folder holding other files": (lambda d: _write_bytes(_mkdir(d / "videos") / "keep.mp4", b"x").parent, "holds other files"),
}


@pytest.mark.parametrize("case", BAD_OUTPUTS)
def test_bad_output_is_refused_before_the_analysis(tmp_path, capsys, no_models, case):
    make, expected = BAD_OUTPUTS[case]
    media = write_wav(tmp_path / "talk.wav", tone(1.0))
    out = make(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    status, err = _analyze(capsys, media, "--out", out)
    assert status == 2
    _assert_one_line(err, str(out), expected)
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


# --- odd but valid input: analysed (reads model weights) -------------------------------------


@pytest.fixture(scope="module")
def shared_models():
    """Every Models instance of this module shares its built models, so each loads once."""
    built: dict = {}

    def get(self, name, make):
        key = (name, self.asr_model, self.asr_engine, self.language, self.beam_size, self.threads, self.fps,
               self.text_head, self.fusion_kind, self.fusion_weights)
        if key not in built:
            built[key] = make()
        self._loaded[name] = built[key]
        return built[key]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Models, "_get", get)
        yield


def _noise(seconds: float) -> np.ndarray:
    return (0.3 * np.random.default_rng(RNG_SEED).standard_normal(int(seconds * 16_000))).clip(-1, 1)


NO_SPEECH = "no speech found"

ODD_MEDIA = {
    # case: (make media in a folder, extra arguments, expected stderr fragment or None for silence)
    "silence": (lambda d: write_wav(d / "silence.wav", np.zeros(48_000)), [], NO_SPEECH),
    "white noise": (lambda d: write_wav(d / "noise.wav", _noise(3.0)), [], NO_SPEECH),
    "0.1 s": (lambda d: write_wav(d / "blip.wav", tone(0.1)), [], NO_SPEECH),
    "8 channels": (lambda d: write_wav(d / "eight.wav", np.tile(tone(2.0)[:, None], (1, 8))), [], NO_SPEECH),
    "8 kHz": (lambda d: write_wav(d / "phone.wav", tone(2.0, rate=8_000), rate=8_000), [], NO_SPEECH),
    "96 kHz": (lambda d: write_wav(d / "studio.wav", tone(2.0, rate=96_000), rate=96_000), [], NO_SPEECH),
    "a wav named .mp4 (wrong extension)": (lambda d: write_wav(d / "really.wav", tone(2.0)).rename(d / "really-a-wav.mp4"), [], NO_SPEECH),
    "unicode and spaces in the path": (lambda d: write_wav(d / "ça va 日本 talk.wav", tone(2.0)), [], NO_SPEECH),
    "video without audio, --modalities audio,text": (
        lambda d: write_video(d / "silent-film.mp4", seconds=2.0), ["--modalities", "audio,text"], "no audio stream"
    ),
    "rotation metadata (90°), --modalities face": (
        lambda d: write_clip(d / "portrait.mp4", [100] * 20, rotation=90), ["--modalities", "face"], None
    ),
    "variable frame rate, --modalities face": (
        lambda d: write_clip(d / "vfr.mp4", [20, 60, 100, 140, 180], times=[0.0, 0.1, 0.5, 0.55, 1.5]), ["--modalities", "face"], None
    ),
    "missing parent folders of --out": (lambda d: write_wav(d / "talk.wav", tone(1.0)), [], NO_SPEECH),
}


@pytest.mark.models
@pytest.mark.slow
@pytest.mark.parametrize("case", ODD_MEDIA)
def test_odd_media_is_analysed(tmp_path, capsys, shared_models, case):
    make, extra, expected = ODD_MEDIA[case]
    media = make(tmp_path)
    out = tmp_path / "a" / "b" / "out"
    status, err = _analyze(capsys, media, "--out", out, *extra)
    assert status == 0, err
    if expected is None:
        assert err == ""
    else:
        _assert_one_line(err, str(media), expected)
    timeline = load_timeline(out)
    duration = timeline.metadata["source"]["duration"]
    assert len(timeline.segments) >= 1
    assert timeline.segments["end"].max() == pytest.approx(duration, abs=0.05)


ACCEPTED_TRANSCRIPTS = {
    "overlapping cues": b"1\n00:00:00,000 --> 00:00:02,000\nhello there\n\n2\n00:00:01,000 --> 00:00:02,500\nsecond voice\n",
    "a cue just past the end": b"1\n00:00:01,000 --> 00:00:03,300\nlate words\n",
}


@pytest.mark.models
@pytest.mark.slow
@pytest.mark.parametrize("case", ACCEPTED_TRANSCRIPTS)
def test_odd_transcript_is_analysed(tmp_path, capsys, shared_models, case):
    media = write_wav(tmp_path / "talk.wav", tone(3.0))
    transcript = _write_bytes(tmp_path / "talk.srt", ACCEPTED_TRANSCRIPTS[case])
    status, err = _analyze(capsys, media, "--transcript", transcript, "--out", tmp_path / "out", "--modalities", "audio,text")
    assert (status, err) == (0, "")
    segments = load_timeline(tmp_path / "out").segments
    assert segments["speech"].sum() == transcript.read_text().count("-->")
    assert segments["end"].max() <= 3.0 + 1e-6


@pytest.mark.models
@pytest.mark.slow
def test_an_asr_model_the_voice_head_does_not_fit_is_one_line(tmp_path, capsys, shared_models):
    """The voice head reads Whisper base's hidden states; tiny.en's are smaller: refused before the first window is encoded."""
    media = write_wav(tmp_path / "talk.wav", tone(3.0))
    transcript = _write_bytes(tmp_path / "talk.srt", SRT_CUE.encode())
    status, err = _analyze(capsys, media, "--transcript", transcript, "--out", tmp_path / "out", "--modalities", "audio", "--asr-model", "tiny.en")
    assert status == 1
    _assert_one_line(err, "the voice head expects an encoder")
    assert not (tmp_path / "out").exists()


# --- real processes: two on one --out, SIGKILL at several moments ----------------------------

CLI = [sys.executable, "-m", "multimodal_ser.cli", "analyze"]
QUICK = ["--modalities", "audio"]
"""Options that keep the subprocess cases short (the voice branch alone)."""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def _start(media: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([*CLI, str(media), "--out", str(out), *QUICK], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _assert_whole_or_absent(out: Path) -> None:
    """``out`` is absent or one complete timeline (Timeline.load refuses mixed or partial ones)."""
    if out.exists():
        load_timeline(out)
        assert sorted(p.name for p in out.iterdir()) == ["frames.parquet", "segments.parquet", "words.parquet"]


@pytest.mark.slow
@pytest.mark.models
def test_two_processes_on_one_out(tmp_path, sample_media):
    out = tmp_path / "out"
    processes = [_start(sample_media / "call_stereo.flac", out) for _ in range(2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in processes]
    assert results == [(0, ""), (0, "")]  # each swaps its folder in whole; the last one stays
    _assert_whole_or_absent(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.slow
@pytest.mark.models
def test_sigkill_never_leaves_a_partial_timeline(tmp_path, sample_media):
    media = sample_media / "call_stereo.flac"
    out = tmp_path / "out"
    fresh = tmp_path / "fresh"
    started = time.monotonic()
    first = _start(media, out)
    assert first.wait(timeout=600) == 0, first.stderr.read()
    whole_run = time.monotonic() - started
    for fraction, target in ((0.5, fresh), (0.3, out), (0.7, out), (0.9, out), (0.97, out)):
        process = _start(media, target)
        time.sleep(fraction * whole_run)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        _assert_whole_or_absent(target)
    for target in (out, fresh):
        rerun = _start(media, target)
        assert rerun.wait(timeout=600) == 0, rerun.stderr.read()
        _assert_whole_or_absent(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "out"]  # the killed runs' leftovers are gone


@pytest.mark.slow
@pytest.mark.models
def test_three_analyses_at_once_succeed(tmp_path, sample_media):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from parallel_load import run_parallel
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    media = [sample_media / "call_stereo.flac", sample_media / "interview.mp4", sample_media / "call_stereo.flac"]
    results = run_parallel(media, tmp_path, QUICK)
    assert [r["status"] for r in results] == [0, 0, 0], [r["stderr"] for r in results]
    for i in range(3):
        load_timeline(tmp_path / str(i))
