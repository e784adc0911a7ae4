"""The packaged default fusion and the fusions ``mser analyze --fusion KIND`` can ask for.

``models/late_fusion.json`` holds the packaged late fusion (:class:`~multimodal_ser.fusion.late.LateFusion`:
weights, temperature, the branches' priors) learned by ``mser train fusion`` from the branches'
held-out predictions, with a card, ``models/late_fusion.md``, that says on what data and compares
it with the packaged attention fusion, each branch alone and equal weights. Its ``default`` key
names the better of the two fusions on held-out data: that one is what ``--fusion default`` (the
default) runs.
"""

from __future__ import annotations

import json
import os

from ..errors import ModelError
from ..files import sha256_file
from ..heads import MODELS_DIR, packaged_checksums
from ..options import FUSIONS
from .attention import load_attention_fusion
from .base import Fusion
from .late import LateFusion, load_late_fusion

DEFAULT_PATH = MODELS_DIR / "late_fusion.json"
"""The packaged late fusion (card: ``late_fusion.md``)."""


def _packaged_late() -> tuple[LateFusion, dict]:
    if not DEFAULT_PATH.is_file():
        raise ModelError(f"{DEFAULT_PATH}: the packaged late fusion is missing; learn it with `mser train fusion`")
    expected = packaged_checksums().get(DEFAULT_PATH.name)
    actual = sha256_file(DEFAULT_PATH)
    if expected is None or actual != expected:
        raise ModelError(f"{DEFAULT_PATH}: sha256 is {actual}, expected {expected}; the file is corrupt or was replaced")
    fusion = load_late_fusion(DEFAULT_PATH)
    return fusion, json.loads(DEFAULT_PATH.read_text())


def packaged_default_kind() -> str:
    """``"late"`` or ``"attention"``: the fusion the packaged card found better on held-out data."""
    _, document = _packaged_late()
    kind = document.get("default", "late")
    if kind not in ("late", "attention"):
        raise ModelError(f"{DEFAULT_PATH}: 'default' must be 'late' or 'attention', found {kind!r}")
    return kind


def load_fusion(kind: str = "default", path: str | os.PathLike | None = None) -> Fusion:
    """The fusion ``mser analyze --fusion KIND [--fusion-weights FILE]`` asks for.

    Args:
        kind: one of :data:`FUSIONS`.
        path: for ``late``, a JSON file from :meth:`LateFusion.save` (None: the packaged one);
            for ``attention``, a safetensors module from ``mser train fusion`` (None: the
            packaged one); not allowed with ``default`` and ``equal``.

    Raises:
        ValueError: unknown ``kind``, or a file given to ``default`` or ``equal``.
        ModelError: the file is missing or invalid.
    """
    if kind not in FUSIONS:
        raise ValueError(f"fusion kind must be one of {FUSIONS}, not {kind!r}")
    if path is not None and kind in ("default", "equal"):
        raise ValueError(f"--fusion {kind} takes no weights file; use --fusion late or attention with one")
    if kind == "default":
        kind = packaged_default_kind()
    if kind == "equal":
        return LateFusion(name="equal")
    if kind == "late":
        if path is None:
            fusion, _ = _packaged_late()
            return fusion
        return load_late_fusion(path)
    return load_attention_fusion(path)
