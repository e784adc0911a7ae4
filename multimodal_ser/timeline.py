"""The analysis result: segments, words and frames tables, saved as Parquet with provenance.

Each Parquet file carries the same JSON provenance under the key ``multimodal_ser`` in its
key-value metadata (package version, models and their sha256, options, source file hash, notes),
so any table can be traced to what made it. Files are written under a temporary name and renamed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import MserError
from .files import atomic_output

TABLES = ("segments", "words", "frames")
METADATA_KEY = b"multimodal_ser"

WORD_COLUMNS = ("word", "start", "end", "probability", "segment_id", "speaker")


@dataclasses.dataclass
class Timeline:
    """What :func:`multimodal_ser.analyze` returns: three tables and their provenance."""

    segments: pd.DataFrame
    """one row per segment of the grid (see DESIGN.md for the columns)."""
    words: pd.DataFrame
    """one row per recognised word: word, start, end (s), probability, segment_id, speaker."""
    frames: pd.DataFrame
    """one row per sampled video frame and face (a no-face frame is one row with face_present False)."""
    metadata: dict

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``segments.parquet``, ``words.parquet``, ``frames.parquet`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        provenance = json.dumps(self.metadata, sort_keys=True, default=str).encode()
        for name in TABLES:
            table = _to_arrow(getattr(self, name))
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: provenance})
            with atomic_output(directory / f"{name}.parquet") as tmp:
                pq.write_table(table, tmp)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Timeline:
        """Read a timeline written by :meth:`save`.

        Raises:
            MserError: a table is missing or was not written by this package.
        """
        directory = Path(directory)
        tables = {}
        metadata: dict = {}
        for name in TABLES:
            path = directory / f"{name}.parquet"
            if not path.is_file():
                raise MserError(f"{path}: missing; {directory} is not a complete timeline")
            table = pq.read_table(path)
            raw = (table.schema.metadata or {}).get(METADATA_KEY)
            if raw is None:
                raise MserError(f"{path}: no multimodal_ser provenance in its metadata")
            metadata = json.loads(raw)
            tables[name] = table.to_pandas()
        return cls(metadata=metadata, **tables)

    @classmethod
    def concat(cls, parts: list[Timeline], metadata: dict) -> Timeline:
        """One timeline from ``parts`` on the same clock (for example each channel of a call).

        Segments are sorted by start (then speaker) and renumbered; each word keeps its segment
        under the new number; frames are sorted by time.
        """
        if not parts:
            raise ValueError("concat needs at least one timeline")
        segments = pd.concat([p.segments.assign(_part=i) for i, p in enumerate(parts)], ignore_index=True)
        segments = segments.sort_values(["start", "speaker"], kind="stable").reset_index(drop=True)
        new_id = {key: i for i, key in enumerate(zip(segments["_part"], segments["segment_id"]))}
        segments["segment_id"] = np.arange(len(segments), dtype=np.int64)
        words = pd.concat([p.words.assign(_part=i) for i, p in enumerate(parts)], ignore_index=True)
        words["segment_id"] = np.array([new_id[key] for key in zip(words["_part"], words["segment_id"])], dtype=np.int64)
        words = words.sort_values("start", kind="stable").reset_index(drop=True)
        seen = [p.frames for p in parts if len(p.frames)]
        frames = pd.concat(seen, ignore_index=True) if seen else parts[0].frames
        if "time" in frames:
            frames = frames.sort_values("time", kind="stable").reset_index(drop=True)
        return cls(segments=segments.drop(columns="_part"), words=words.drop(columns="_part"), frames=frames, metadata=metadata)


def _to_arrow(frame: pd.DataFrame) -> pa.Table:
    """Arrow table whose ``*_embedding`` columns are lists of float32, null where absent.

    All present rows of a column have one size, recorded as ``dim`` in the field's metadata.
    (A Parquet fixed-size-list column with nulls cannot be read back by pyarrow 25, so the
    size is declared in metadata rather than in the type.)
    """
    embedding_columns = [c for c in frame if c.endswith("_embedding")]
    table = pa.Table.from_pandas(frame.drop(columns=embedding_columns), preserve_index=False)
    for column in embedding_columns:
        values = [None if v is None else np.asarray(v, dtype=np.float32) for v in frame[column]]
        sizes = {len(v) for v in values if v is not None}
        if len(sizes) > 1:
            raise ValueError(f"column {column} mixes embedding sizes {sorted(sizes)}")
        field = pa.field(column, pa.list_(pa.float32()), metadata={"dim": str(sizes.pop()) if sizes else "0"})
        table = table.append_column(field, pa.array(values, type=field.type))
    return table


def load_timeline(directory: str | os.PathLike) -> Timeline:
    """Read a timeline written by :meth:`Timeline.save` (the same as :meth:`Timeline.load`)."""
    return Timeline.load(directory)


def read_provenance(path: str | os.PathLike) -> dict:
    """The provenance JSON of one Parquet file, without reading its rows."""
    raw = (pq.read_schema(path).metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise MserError(f"{path}: no multimodal_ser provenance in its metadata")
    return json.loads(raw)
