"""Shared fixtures (where the real data and the project's sample media live) and the markers.

Markers (``pyproject.toml``): ``data`` reads ``../shared/data`` (added here to every test that uses
the ``shared_data`` fixture), ``models`` loads model weights, ``slow`` takes more than a few
seconds. ``make test-fast`` runs ``not slow and not models`` with ``MSER_TEST_NO_WEIGHTS=1``, which
makes reading any weight file an error, so a test that loads weights without the marker fails.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE_MEDIA = REPO / "sample_media"
SHARED_DATA = Path(os.environ.get("MSER_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or ``$MSER_DATA``); tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set MSER_DATA to its folder)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_media() -> Path:
    return SAMPLE_MEDIA


WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".onnx", ".tflite", ".task", ".h5", ".hdf5", ".bin")
"""Files a test may read only when it is marked ``models`` (files it made itself under the temporary folder excepted)."""


def _refuse_weights(event: str, args: tuple) -> None:
    if event != "open" or not isinstance(args[0], (str, os.PathLike)):
        return
    path = os.fspath(args[0])
    mode = args[1] if len(args) > 1 and isinstance(args[1], str) else "r"
    if path.endswith(WEIGHT_SUFFIXES) and "r" in mode and not path.startswith(tempfile.gettempdir()):
        raise RuntimeError(f"{path}: a test without the 'models' marker read model weights")


def pytest_configure(config):
    if os.environ.get("MSER_TEST_NO_WEIGHTS"):
        sys.addaudithook(_refuse_weights)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "shared_data" in item.fixturenames:
            item.add_marker(pytest.mark.data)
