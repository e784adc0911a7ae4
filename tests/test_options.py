"""One definition of the analysis options: the library's defaults, its checks and the CLI's flags agree."""

import dataclasses
import os
import subprocess
import sys

import pytest

from multimodal_ser import AnalysisOptions
from multimodal_ser.cli import build_parser
from multimodal_ser.options import option_values


def test_the_cli_offers_every_option_with_the_librarys_default():
    args = build_parser().parse_args(["analyze", "a.wav", "--out", "o"])
    assert {f.name for f in dataclasses.fields(AnalysisOptions)} <= set(vars(args))
    assert AnalysisOptions(**option_values(args)) == AnalysisOptions()


def test_cli_values_reach_the_options():
    args = build_parser().parse_args(
        ["analyze", "a.wav", "--out", "o", "--modalities", "audio,text", "--fusion", "late", "--fps", "2", "--threads", "1"]
    )
    options = AnalysisOptions(**option_values(args))
    assert (options.modalities, options.fusion, options.fps, options.threads) == (("audio", "text"), "late", 2.0, 1)


@pytest.mark.parametrize(
    "bad",
    [{"modalities": ()}, {"modalities": ("smell",)}, {"fps": 0}, {"fps": 121}, {"fps": float("nan")}, {"threads": 0},
     {"beam_size": 0}, {"asr_engine": "x"}, {"fusion": "vote"}, {"fusion_weights": "w.json"}, {"gap_window": 0}],
)
def test_bad_options_are_refused_with_the_option_named(bad):
    with pytest.raises(ValueError, match=next(iter(bad)).split("_")[0]):
        AnalysisOptions(**bad)


@pytest.mark.parametrize("argv", [["analyze", "a.wav", "--out", "o", "--modalities", "smell"], ["analyze", "a.wav", "--out", "o", "--fusion", "vote"]])
def test_the_cli_refuses_bad_choices(argv):
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)


def test_training_reads_its_data_folder_from_the_flag_or_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("MSER_DATA", raising=False)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "text", "--out", str(tmp_path)])
    monkeypatch.setenv("MSER_DATA", str(tmp_path))
    args = build_parser().parse_args(["train", "text", "--out", str(tmp_path / "heads")])
    assert str(args.data) == str(tmp_path) and args.out == tmp_path / "heads"


def test_the_package_root_and_the_cli_help_load_no_heavy_library():
    code = ("import sys, multimodal_ser, multimodal_ser.cli; multimodal_ser.cli.build_parser(); "
            "print(sorted({'torch', 'pandas', 'av', 'numpy'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**os.environ})
    assert out.stdout.strip() == "[]"
