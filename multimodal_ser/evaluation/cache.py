"""The prediction cache of ``mser evaluate``: what each branch computed for an item, kept on disk.

Files are ``root/<branch>/<key[:2]>/<key>.npz`` (numpy arrays only, no pickles), keyed by
:meth:`PredictionCache.key` over the file's sha256 (:func:`file_key`), the item's ``start`` and
``end``, the ids of the models involved and :data:`PREDICTION_RECIPE`. A re-run is fast: another
voice head needs no new encoder pass, because the cache keeps the voice *features*.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from ..files import atomic_output, sha256_file

log = logging.getLogger(__name__)

PREDICTION_RECIPE = "evaluate-items/v2-level-normalised"
"""Version of the per-item recipe (:mod:`multimodal_ser.evaluation.items`); part of every cache key."""


class PredictionCache:
    """Per-branch prediction files under ``root``; None as ``root`` keeps nothing (every ``get`` misses)."""

    def __init__(self, root: Path | None):
        self.root = root

    @staticmethod
    def key(*parts) -> str:
        """The sha256 hex digest of :data:`PREDICTION_RECIPE` and ``parts`` (JSON, keys sorted)."""
        return hashlib.sha256(json.dumps([PREDICTION_RECIPE, *parts], sort_keys=True, default=str).encode()).hexdigest()

    def _file(self, branch: str, key: str) -> Path:
        return self.root / branch / key[:2] / f"{key}.npz"

    def get(self, branch: str, key: str) -> dict[str, np.ndarray] | None:
        """The arrays stored under ``key``, or None (not cached, or unreadable: logged and ignored)."""
        if self.root is None or not self._file(branch, key).is_file():
            return None
        try:
            with np.load(self._file(branch, key), allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable cache file %s (%s)", self._file(branch, key), e)
            return None

    def put(self, branch: str, key: str, **arrays: np.ndarray) -> None:
        """Store ``arrays`` under ``key`` (atomically; nothing when the cache is off)."""
        if self.root is None:
            return
        with atomic_output(self._file(branch, key)) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)


def file_key(path: Path, memo: dict) -> str:
    """The sha256 of ``path``, remembered in ``memo`` by path, size and modification time."""
    stat = path.stat()
    token = (str(path), stat.st_size, stat.st_mtime_ns)
    if token not in memo:
        memo[token] = sha256_file(path)
    return memo[token]
