"""The model registry: cheap to build, validated, one instance per model."""

from __future__ import annotations

import pytest

from multimodal_ser import AnalysisOptions, Analyzer
from multimodal_ser.errors import MserError
from multimodal_ser.registry import Models


def test_building_the_registry_loads_nothing():
    models = Models(asr_model="tiny.en", threads=1, fps=2.0)
    assert not any(models.loaded(name) for name in ("whisper", "encoder", "transcriber", "vad", "voice", "text", "face"))
    assert models.whisper_id()["name"] == "tiny.en"  # known from the package list, without loading anything
    assert not models.loaded("whisper")


@pytest.mark.parametrize(("options", "message"), [({"threads": 0}, "threads must be an int >= 1"),
                                                  ({"threads": True}, "threads must be an int >= 1"),
                                                  ({"fps": 0}, r"fps must be in \(0, 30\]")])
def test_options_are_validated_at_construction(options, message):
    with pytest.raises(ValueError, match=message):
        Models(**options)


def test_a_folder_without_ctranslate2_weights_is_refused(tmp_path):
    with pytest.raises(MserError, match="needs a packaged Whisper name"):
        Models(asr_model=str(tmp_path)).ct2_dir()


def test_the_pipeline_takes_its_models_from_the_registry():
    analyzer = Analyzer(AnalysisOptions(asr_model="tiny.en", language="en", beam_size=2, fps=1.0, threads=1))
    models = analyzer.models
    assert (models.asr_model, models.language, models.beam_size, models.fps, models.threads) == ("tiny.en", "en", 2, 1.0, 1)
    assert not models.loaded("whisper")
