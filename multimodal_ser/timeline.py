"""The analysis result: segments, words and frames tables, saved as Parquet with provenance.

Each Parquet file carries the same JSON provenance under the key ``multimodal_ser`` in its
key-value metadata (package version, models and their sha256, options, source file hash, notes),
so any table can be traced to what made it. A timeline folder is one unit: it is written whole
under a temporary name and renamed into place, and its tables share one ``save_id``.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import MserError
from .files import EXCHANGE_UNSUPPORTED, current_umask, exchange_paths

TABLES = ("segments", "words", "frames")
SUMMARY = "summary"
"""optional fourth table of a timeline folder: a use case's metrics (``pipelines``), one row each."""
METADATA_KEY = b"multimodal_ser"
SAVE_ID = "save_id"
"""provenance key: the same random id in all three tables of one save."""

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

    def save(self, directory: str | os.PathLike, *, summary: pd.DataFrame | None = None) -> Path:
        """Write ``segments.parquet``, ``words.parquet``, ``frames.parquet`` (and ``summary.parquet``
        when ``summary`` is given) as the folder ``directory``.

        The folder is written whole under a hidden temporary sibling name and renamed into place,
        so a reader sees the old timeline (or none) or the complete new one, never a mix. An
        existing timeline folder is replaced by swapping the two folders in one step, then removing
        the old one (where the file system cannot swap: the old one renamed aside, the new one
        renamed in, so a reader in that instant finds no folder rather than a mixed one).

        Raises:
            MserError: ``directory`` is a file, holds files other than a timeline's tables (which
                would be lost), or cannot be written.
        """
        directory = Path(directory)
        check_output_dir(directory)
        provenance = json.dumps({**self.metadata, SAVE_ID: uuid.uuid4().hex}, sort_keys=True, default=str).encode()
        tables = {}
        frames = {name: getattr(self, name) for name in TABLES} | ({} if summary is None else {SUMMARY: summary})
        for name, frame in frames.items():  # converted before anything is written: a bad table writes nothing
            table = _to_arrow(frame)
            tables[name] = table.replace_schema_metadata({**(table.schema.metadata or {}), METADATA_KEY: provenance})
        try:
            directory.parent.mkdir(parents=True, exist_ok=True)
            _remove_leftovers(directory)
            tmp = Path(tempfile.mkdtemp(prefix=_writer_prefix(directory, os.getpid()), suffix=".tmp", dir=directory.parent))
        except OSError as e:
            raise MserError(f"{directory}: cannot write the timeline there ({e.strerror})") from e
        try:
            os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700; give the folder the usual permissions
            for name, table in tables.items():
                pq.write_table(table, tmp / f"{name}.parquet")
            _rename_into_place(tmp, directory)
        except OSError as e:
            raise MserError(f"{directory}: cannot write the timeline there ({e.strerror or e})") from e
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Timeline:
        """Read a timeline written by :meth:`save`.

        Raises:
            MserError: a table is missing, unreadable or was not written by this package, or the
                tables come from different saves.
        """
        directory = Path(directory)
        tables = {}
        metadata: dict = {}
        save_ids = set()
        for name in TABLES:
            path = directory / f"{name}.parquet"
            if not path.is_file():
                raise MserError(f"{path}: missing; {directory} is not a complete timeline")
            try:
                table = pq.read_table(path)
            except (OSError, pa.ArrowException) as e:
                raise MserError(f"{path}: not a readable Parquet table ({e})") from e
            raw = (table.schema.metadata or {}).get(METADATA_KEY)
            if raw is None:
                raise MserError(f"{path}: no multimodal_ser provenance in its metadata")
            metadata = json.loads(raw)
            save_ids.add(metadata.get(SAVE_ID))
            tables[name] = table.to_pandas()
        if len(save_ids) > 1:
            raise MserError(f"{directory}: its tables come from different saves (mixed timelines); analyse the media again")
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


def check_output_dir(directory: str | os.PathLike) -> None:
    """Raise MserError unless a timeline can be saved as ``directory`` without losing anything:
    it must be absent, an empty folder, or a folder holding only a timeline's tables."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise MserError(f"{directory}: exists and is not a folder")
    if directory.is_dir():
        try:
            others = sorted(p.name for p in directory.iterdir() if not _timeline_file(p.name))
        except OSError as e:
            raise MserError(f"{directory}: cannot read the folder ({e.strerror})") from e
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise MserError(f"{directory}: holds other files ({shown}) that replacing the timeline would delete; give a new or empty folder")
    parent = directory.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:  # a real probe: permission bits do not tell (root, read-only mounts)
        os.rmdir(tempfile.mkdtemp(prefix=".mser-probe.", dir=parent))
    except OSError as e:
        raise MserError(f"{directory}: cannot write there ({parent}: {e.strerror})") from e


def _timeline_file(name: str) -> bool:
    """A table of a timeline, or the temporary file an older version left beside one."""
    return any(name == f"{t}.parquet" or (name.startswith(f".{t}.parquet.") and name.endswith(".tmp")) for t in (*TABLES, SUMMARY))


def _writer_prefix(directory: Path, pid: int) -> str:
    """Name prefix of the temporary folders a process ``pid`` on this machine writes ``directory`` under."""
    return f".{directory.name}.{socket.gethostname()}.{pid}."


def _remove_leftovers(directory: Path) -> None:
    """Remove the temporary folders (``.tmp``) and set-aside old timelines (``.old``) that
    writers of ``directory`` on this machine left when killed: those whose process is gone."""
    host_prefix = f".{directory.name}.{socket.gethostname()}."
    for path in directory.parent.glob(f"{glob.escape(host_prefix)}*"):
        pid = path.name[len(host_prefix) :].split(".", 1)[0]
        if pid.isdigit() and path.suffix in (".tmp", ".old") and not _running(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _rename_into_place(tmp: Path, directory: Path) -> None:
    """Rename the finished folder ``tmp`` to ``directory``, replacing an old timeline there.

    The old and new folders are swapped in one step where the file system can (``tmp`` then
    holds the old timeline, removed by the caller); elsewhere the old one is renamed aside first.
    """
    try:
        os.rename(tmp, directory)  # also replaces an empty folder
        return
    except OSError:
        if not directory.is_dir():
            raise
    try:
        exchange_paths(tmp, directory)
        return
    except OSError as e:
        if e.errno not in EXCHANGE_UNSUPPORTED:
            raise
    aside = directory.with_name(f"{_writer_prefix(directory, os.getpid())}{uuid.uuid4().hex[:8]}.old")
    os.rename(directory, aside)
    try:
        os.rename(tmp, directory)
    except OSError:
        os.rename(aside, directory)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def load_timeline(directory: str | os.PathLike) -> Timeline:
    """Read a timeline written by :meth:`Timeline.save` (the same as :meth:`Timeline.load`)."""
    return Timeline.load(directory)


def load_summary(directory: str | os.PathLike) -> pd.DataFrame | None:
    """The ``summary.parquet`` a use case saved with a timeline, or None when there is none."""
    path = Path(directory) / f"{SUMMARY}.parquet"
    if not path.is_file():
        return None
    try:
        return pq.read_table(path).to_pandas()
    except (OSError, pa.ArrowException) as e:
        raise MserError(f"{path}: not a readable Parquet table ({e})") from e


def read_provenance(path: str | os.PathLike) -> dict:
    """The provenance JSON of one Parquet file, without reading its rows."""
    raw = (pq.read_schema(path).metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise MserError(f"{path}: no multimodal_ser provenance in its metadata")
    return json.loads(raw)
