"""Shared fixtures: where the real data and the project's sample media live."""

from __future__ import annotations

import os
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
