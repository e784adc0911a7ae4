"""The inputs of a batch: a manifest CSV with a ``path`` column, glob patterns, or both."""

from __future__ import annotations

import csv
import glob
import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import ManifestError


def read_manifest(manifest: str | os.PathLike) -> list[Path]:
    """The ``path`` column of a CSV manifest; relative paths are taken from the manifest's folder.

    Raises:
        ManifestError: the file cannot be read as CSV, has no ``path`` column, or a row has no path.
    """
    manifest = Path(manifest)
    try:
        with open(manifest, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ManifestError(f"{manifest}: cannot be read as a CSV manifest ({e})") from e
    if "path" not in (reader.fieldnames or ()) or not rows:
        raise ManifestError(f"{manifest}: needs a header with a 'path' column and at least one row")
    paths = []
    for line, row in enumerate(rows, start=2):
        text = (row.get("path") or "").strip()
        if not text:
            raise ManifestError(f"{manifest}: line {line} has no path")
        path = Path(text)
        paths.append(path if path.is_absolute() else manifest.parent / path)
    return paths


def read_inputs(*, manifest: str | os.PathLike | None = None, patterns: Iterable[str] = ()) -> list[Path]:
    """The media files of a batch, in order, each once: the manifest's paths, then each pattern's
    matches (``**`` recurses; a pattern without wildcards is taken as a path even if missing, so that
    the batch reports it).

    Raises:
        ManifestError: a bad manifest, a pattern that matches nothing, or no input at all.
    """
    paths = read_manifest(manifest) if manifest is not None else []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise ManifestError(f"{pattern}: matches no file")
            paths += [Path(m) for m in matches if os.path.isfile(m)]
        else:
            paths.append(Path(pattern))
    if not paths:
        raise ManifestError("no inputs: give a manifest (--manifest) or files / glob patterns")
    return list(dict.fromkeys(paths))
