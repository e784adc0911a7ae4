"""Labelled manifests: the one CSV contract every evaluation and training command reads.

A manifest is a CSV with the columns

- ``path`` (required): a media file, relative to the manifest's folder or absolute;
- ``label`` (required): the emotion, a name of :data:`~multimodal_ser.labels.EMOTIONS` for the
  shared-space commands (the dataset builders map each dataset's names into it);
- ``start``, ``end`` (optional): seconds within the file; empty means the whole file;
- ``group`` (optional): speaker / actor / dialogue id; splits never put one group on both sides;
- ``split`` (optional): ``train``, ``dev`` or ``test`` when the dataset defines one;
- ``text`` (optional): the transcript of the segment.

Other columns are kept as they are (the builders add, for example, RAVDESS's 8-class ``label8``).
:func:`read_manifest` validates a file and resolves its paths; :func:`load_manifest` also takes a
DataFrame and records where the manifest came from. The ``*_manifest`` builders of
:mod:`multimodal_ser.evaluation.datasets` make one from a known dataset layout
(``mser manifest ravdess|turev-db|urdu|crema-d|meld|folder DIR``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ManifestError
from ..files import sha256_file
from ..labels import EMOTIONS

REQUIRED_COLUMNS: tuple[str, ...] = ("path", "label")
OPTIONAL_COLUMNS: tuple[str, ...] = ("start", "end", "group", "split", "text")


# --- reading -------------------------------------------------------------------------------------


def read_manifest(path: str | os.PathLike, *, labels: Sequence[str] | None = None, check_files: bool = True) -> pd.DataFrame:
    """Read and validate a labelled manifest.

    Args:
        path: the CSV file.
        labels: when given, every ``label`` must be one of these names.
        check_files: require every ``path`` to name an existing file.

    Returns:
        One row per CSV row with ``path`` resolved to an absolute path string, ``label`` stripped,
        ``start``/``end`` float seconds (NaN when absent), ``group``/``split`` strings or None,
        ``text`` strings ("" when absent), then any extra columns unchanged.

    Raises:
        ManifestError: the file is missing or not CSV, a required column is missing, or a row is bad;
            the message names the file and the row's line number (the header is line 1).
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path}: not a readable CSV manifest ({e})") from e
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ManifestError(
            f"{path}: missing required column(s) {missing}; expected {list(REQUIRED_COLUMNS)} "
            f"(+ optional {list(OPTIONAL_COLUMNS)}), found {list(table.columns)}"
        )
    if table.empty:
        raise ManifestError(f"{path}: the manifest has a header but no rows")
    allowed = None if labels is None else set(labels)
    root = path.resolve().parent
    rows = []
    for i, row in enumerate(table.to_dict("records")):
        where = f"{path}, line {i + 2}"
        rows.append(_validated_row(row, where=where, root=root, allowed=allowed, check_files=check_files))
    out = pd.DataFrame(rows, columns=list(table.columns) + [c for c in OPTIONAL_COLUMNS if c not in table.columns])
    order = list(REQUIRED_COLUMNS) + list(OPTIONAL_COLUMNS)
    out = out[order + [c for c in out.columns if c not in order]]
    out["start"] = out["start"].astype(np.float64)
    out["end"] = out["end"].astype(np.float64)
    for column in ("group", "split"):  # None where absent, not NaN
        out[column] = pd.Series([r[column] for r in rows], dtype=object, index=out.index)
    return out


def _validated_row(row: dict, *, where: str, root: Path, allowed: set[str] | None, check_files: bool) -> dict:
    raw_path = row["path"].strip()
    if not raw_path:
        raise ManifestError(f"{where}: empty path")
    file = Path(raw_path).expanduser()
    file = file if file.is_absolute() else root / file
    if check_files and not file.is_file():
        raise ManifestError(f"{where}: file not found: {raw_path!r} (resolved to {file})")
    label = row["label"].strip()
    if not label:
        raise ManifestError(f"{where}: empty label")
    if allowed is not None and label not in allowed:
        raise ManifestError(f"{where}: label {label!r} is not one of {sorted(allowed)}")
    times = {}
    for key in ("start", "end"):
        text = str(row.get(key, "")).strip()
        if not text:
            times[key] = np.nan
            continue
        try:
            times[key] = float(text)
        except ValueError:
            raise ManifestError(f"{where}: {key} must be a number of seconds, not {text!r}") from None
        if not np.isfinite(times[key]) or times[key] < 0:
            raise ManifestError(f"{where}: {key} must be a finite number of seconds >= 0, not {text!r}")
    if not np.isnan(times["start"]) and not np.isnan(times["end"]) and times["end"] <= times["start"]:
        raise ManifestError(f"{where}: end ({times['end']}) must be after start ({times['start']})")
    out = dict(row)
    out.update(
        path=str(file.resolve()),
        label=label,
        start=times["start"],
        end=times["end"],
        group=str(row.get("group", "")).strip() or None,
        split=str(row.get("split", "")).strip() or None,
        text=str(row.get("text", "")),
    )
    return out


def manifest_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows -> a manifest frame: required and optional columns first, sorted by path."""
    table = pd.DataFrame(rows)
    for column in OPTIONAL_COLUMNS:
        if column not in table.columns:
            table[column] = np.nan if column in ("start", "end") else ("" if column == "text" else None)
    order = list(REQUIRED_COLUMNS) + list(OPTIONAL_COLUMNS)
    table = table[order + [c for c in table.columns if c not in order]]
    return table.sort_values("path", kind="stable").reset_index(drop=True)


def load_manifest(manifest: str | os.PathLike | pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """A labelled manifest over :data:`~multimodal_ser.labels.EMOTIONS`, and where it came from.

    Args:
        manifest: a manifest CSV (read by :func:`read_manifest` without checking that the files
            exist: a missing file is a failed item, or a text-only one), or a DataFrame with at least
            ``path`` and ``label`` (the optional columns are added when absent).

    Returns:
        ``(table, info)``: the table, and ``{"path", "sha256", "n_rows"}`` for a file or
        ``{"source": "DataFrame", "n_rows"}`` for a frame.

    Raises:
        ManifestError: the CSV is malformed.
        ValueError: the frame lacks ``path`` or ``label``, or has a label outside EMOTIONS.
    """
    if isinstance(manifest, pd.DataFrame):
        table = manifest.reset_index(drop=True)
        missing = [c for c in REQUIRED_COLUMNS if c not in table]
        if missing:
            raise ValueError(f"manifest frame lacks the columns {missing}; expected path, label (+ start, end, group, text)")
        for column, default in (("start", np.nan), ("end", np.nan), ("group", None), ("text", "")):
            if column not in table:
                table[column] = default
        bad = sorted(set(table["label"]) - set(EMOTIONS))
        if bad:
            raise ValueError(f"manifest labels must be names of {EMOTIONS}; found {bad[:5]}")
        return table, {"source": "DataFrame", "n_rows": len(table)}
    path = Path(manifest)
    table = read_manifest(path, labels=EMOTIONS, check_files=False)
    return table, {"path": str(path.resolve()), "sha256": sha256_file(path), "n_rows": len(table)}
