"""Small trained heads shipped inside the package: storage format, checksums and the MLP.

A head is one safetensors file: its tensors, plus a JSON ``config`` in the file's metadata
(input size, labels, feature recipe, training summary). Every packaged head has its sha256
in ``models/SHA256SUMS``; loading refuses a file whose hash differs.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .errors import ModelError
from .files import atomic_output, sha256_file

MODELS_DIR = Path(__file__).parent / "models"
"""Where the packaged heads and their model cards live."""

CHECKSUMS_FILE = MODELS_DIR / "SHA256SUMS"


def packaged_checksums() -> dict[str, str]:
    """``{file name: sha256}`` of the heads shipped in :data:`MODELS_DIR`."""
    if not CHECKSUMS_FILE.exists():
        return {}
    sums = {}
    for line in CHECKSUMS_FILE.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip()] = digest
    return sums


def record_checksum(path: Path) -> str:
    """Write ``path``'s sha256 into :data:`CHECKSUMS_FILE` (used when training into the package)."""
    sums = packaged_checksums()
    sums[path.name] = sha256_file(path)
    with atomic_output(CHECKSUMS_FILE) as tmp:
        tmp.write_text("".join(f"{d}  {n}\n" for n, d in sorted(sums.items())))
    return sums[path.name]


def in_package(path: str | os.PathLike) -> bool:
    """Whether ``path`` lies in :data:`MODELS_DIR`, where every file's sha256 is kept in :data:`CHECKSUMS_FILE`."""
    return Path(path).resolve().parent == MODELS_DIR.resolve()


def record_if_packaged(path: str | os.PathLike) -> str | None:
    """After writing a model file: record its sha256 in :data:`CHECKSUMS_FILE` when it lies in
    :data:`MODELS_DIR`. Returns the recorded sha256, None for a file elsewhere (nothing recorded)."""
    return record_checksum(Path(path)) if in_package(path) else None


def save_head(path: str | os.PathLike, tensors: dict[str, torch.Tensor], config: dict) -> Path:
    """Write a head atomically: ``tensors`` (contiguous, CPU) with ``config`` as JSON metadata."""
    path = Path(path)
    with atomic_output(path) as tmp:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
            str(tmp),
            metadata={"config": json.dumps(config, sort_keys=True)},
        )
    return path


def load_head(path: str | os.PathLike, *, sha256: str | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a head written by :func:`save_head`, verifying its sha256.

    Args:
        path: the safetensors file.
        sha256: expected hex digest. ``None`` looks the file up in :data:`CHECKSUMS_FILE` when it
            lies in :data:`MODELS_DIR`, and skips the check for a user's own file elsewhere.

    Raises:
        ModelError: the file is missing, its hash differs, or it is not a head.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: head file not found")
    if sha256 is None and in_package(path):
        sha256 = packaged_checksums().get(path.name)
        if sha256 is None:
            raise ModelError(f"{path}: packaged head has no entry in {CHECKSUMS_FILE.name}")
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256:
            raise ModelError(f"{path}: sha256 is {actual}, expected {sha256}; the file is corrupt or was replaced")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises several unrelated types on bad files
        raise ModelError(f"{path}: not a readable safetensors head ({e})") from e
    if "config" not in metadata:
        raise ModelError(f"{path}: safetensors file has no 'config' metadata; not a multimodal-ser head")
    return tensors, json.loads(metadata["config"])


def update_head_config(path: str | os.PathLike, updates: dict) -> str:
    """Re-save a head with ``updates`` merged into its config; the tensors stay exactly as they were.

    Used to store a calibration fitted after training without retraining the head. A packaged
    head (in :data:`MODELS_DIR`) gets its new sha256 recorded in :data:`CHECKSUMS_FILE`.

    Returns:
        the file's new sha256.

    Raises:
        ModelError: the file is missing, corrupt or not a head.
    """
    path = Path(path)
    tensors, config = load_head(path)
    save_head(path, tensors, {**config, **updates})
    return record_if_packaged(path) or sha256_file(path)


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Run torch with one intra-op thread. Small heads gain nothing from more, and on busy
    cores each small operation waits for the others (training went from seconds to minutes here)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class MLPHead(nn.Module):
    """Standardise, then a one-hidden-layer MLP: ``(batch, n_in) -> (batch, n_out)`` logits."""

    def __init__(self, n_in: int, n_out: int, *, hidden: int = 256, dropout: float = 0.3):
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_in))
        self.register_buffer("std", torch.ones(n_in))
        self.net = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(n_in, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, n_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)
