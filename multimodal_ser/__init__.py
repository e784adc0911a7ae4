"""multimodal-ser: emotion timelines from the voice, the words and the face of recorded speech.

The package root is light: the analysis (torch, the models) loads when one of its names is first
used, so ``import multimodal_ser`` and ``mser --help`` stay fast.

Importing it turns off onnxruntime's telemetry (device id file, event database, uploads) for the
process, before onnxruntime (the VAD's runtime) is first imported; set ``ORT_DISABLE_TELEMETRY=0``
beforehand to keep it.
"""

from __future__ import annotations

import importlib
import os

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # documented in onnxruntime's Privacy.md

from .errors import ManifestError, MediaError, ModelError, MserError, TranscriptError
from .options import AnalysisOptions

__version__ = "0.1.0"

_LAZY = {
    "Analyzer": "pipeline",
    "analyze": "pipeline",
    "Timeline": "timeline",
    "load_timeline": "timeline",
}

__all__ = [
    "AnalysisOptions",
    "Analyzer",
    "ManifestError",
    "MediaError",
    "ModelError",
    "MserError",
    "Timeline",
    "TranscriptError",
    "__version__",
    "analyze",
    "load_timeline",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
