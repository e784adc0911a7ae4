"""``mser analyze`` checks its options and output before any model runs, and is quiet and local."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from multimodal_ser.cli import build_parser, main, output_folders
from multimodal_ser.pipeline import Analyzer


@pytest.fixture
def no_analysis(monkeypatch):
    """Fail the test if an analysis starts: every check here must come first."""

    def analyze(*args, **kwargs):
        raise AssertionError("the analysis ran before the bad option or output was reported")

    monkeypatch.setattr(Analyzer, "analyze", analyze)


def _one_line_error(capsys, status, expected):
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("mser: ") and expected in err, err


def test_out_that_is_a_file_fails_at_once(tmp_path, capsys, no_analysis):
    (tmp_path / "taken").write_text("x")
    status = main(["analyze", str(tmp_path / "a.wav"), "--out", str(tmp_path / "taken")])
    _one_line_error(capsys, status, f"{tmp_path / 'taken'}: exists and is not a folder")
    status = main(["analyze", str(tmp_path / "a.wav"), str(tmp_path / "b.wav"), "--out", str(tmp_path / "taken")])
    _one_line_error(capsys, status, "exists and is not a folder")


def test_out_that_cannot_be_written_fails_at_once(tmp_path, capsys, no_analysis):
    (tmp_path / "file").write_text("x")
    status = main(["analyze", str(tmp_path / "a.wav"), "--out", str(tmp_path / "file" / "out")])
    _one_line_error(capsys, status, "cannot write there")


def test_out_holding_other_files_is_not_replaced(tmp_path, capsys, no_analysis):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "holiday.mp4").write_bytes(b"precious")
    status = main(["analyze", str(tmp_path / "a.wav"), "--out", str(tmp_path / "videos")])
    _one_line_error(capsys, status, "holds other files (holiday.mp4)")
    assert (tmp_path / "videos" / "holiday.mp4").read_bytes() == b"precious"


def test_a_bad_fusion_weights_file_fails_before_the_analysis(tmp_path, capsys, no_analysis):
    weights = tmp_path / "fusion.json"
    weights.write_text("{not json")
    status = main(["analyze", str(tmp_path / "a.wav"), "--out", str(tmp_path / "out"), "--fusion-weights", str(weights)])
    _one_line_error(capsys, status, "fusion.json")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flags, expected",
    [(["--beam-size", "0"], "beam_size must be an int >= 1"), (["--language", "xx"], "language must be a Whisper language"),
     (["--threads", "0"], "threads must be an int >= 1"), (["--gap-window", "nan"], "gap_window must be positive")],
)
def test_bad_options_are_one_line_errors(tmp_path, capsys, no_analysis, flags, expected):
    status = main(["analyze", str(tmp_path / "a.wav"), "--out", str(tmp_path / "out"), *flags])
    _one_line_error(capsys, status, expected)


def test_inputs_sharing_a_stem_get_their_own_folders(tmp_path):
    media = [Path("a/talk.wav"), Path("b/talk.mp4"), Path("c/intro.wav"), Path("d/talk.wav"), Path("talk.wav-2.mp4")]
    folders = output_folders(tmp_path, media)
    assert [f.name for f in folders] == ["talk.wav", "talk.mp4", "intro", "talk.wav-2", "talk.wav-2-2"]
    assert len(set(folders)) == len(folders)
    assert output_folders(tmp_path, [Path("a/talk.wav")]) == [tmp_path]
    assert "<file name>" in " ".join(build_parser()._subparsers._group_actions[0].choices["analyze"].description.split())


@pytest.mark.slow
@pytest.mark.models
def test_analyze_is_silent_and_writes_only_its_output_and_cache(tmp_path, sample_media):
    """A fresh HOME: nothing may appear outside --out and $MSER_CACHE, and stderr stays empty."""
    home, cache, out, cwd = (tmp_path / name for name in ("home", "cache", "out", "cwd"))
    for folder in (home, cwd):
        folder.mkdir()
    settings = ("ORT_DISABLE_TELEMETRY", "MPLCONFIGDIR", "HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY")
    env = {k: v for k, v in os.environ.items() if k not in settings}  # as a user's shell has them
    env.update(HOME=str(home), MSER_CACHE=str(cache), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    media = [sample_media / "call_stereo.flac", sample_media / "interview.mp4"]
    run = subprocess.run(
        [sys.executable, "-m", "multimodal_ser.cli", "analyze", *map(str, media), "--out", str(out)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert (out / "interview" / "segments.parquet").is_file() and (out / "call_stereo" / "frames.parquet").is_file()
    elsewhere = [p for p in tmp_path.rglob("*") if not p.is_dir() and not p.is_relative_to(out) and not p.is_relative_to(cache)]
    assert elsewhere == []


@pytest.mark.slow
@pytest.mark.models
def test_analyze_opens_no_network_connection(tmp_path, sample_media):
    """Every connect() of the process and its threads is traced (native code included): none may
    reach an IPv4 or IPv6 address. A fresh HOME and cache, so first-run conversions are traced too."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed (.ci/run installs it from the OS packages)")
    log = tmp_path / "connect.log"
    env = {**os.environ, "HOME": str(tmp_path / "home"), "MSER_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    (tmp_path / "home").mkdir()
    run = subprocess.run(
        [strace, "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(log), sys.executable, "-m", "multimodal_ser.cli",
         "analyze", str(sample_media / "interview.mp4"), "--out", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert run.returncode == 0, run.stderr
    calls = log.read_text().splitlines()
    assert calls, "strace recorded nothing: the trace did not run"
    network = [c for c in calls if "AF_INET" in c]
    assert network == []
