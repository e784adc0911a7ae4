"""The batch's dataset on disk, and how an item enters it without a reader ever seeing half of it.

    OUT/segments/recording=<id>/part.parquet   (the same for words and frames)
    OUT/_items/<id>.json                        the commit record of a done item
    OUT/_staging/                               work in progress, removed on every start
    OUT/_lock                                   held by the one batch writing OUT
    OUT/status.parquet                          one row per input of the last run

An item is written whole under ``_staging``, its three partition folders are renamed into place,
and only then is its record written (atomically): a partition without a record is left over from
a killed run and is removed before the next run starts, so it is analysed again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ..errors import MserError
from ..files import atomic_output
from ..timeline import TABLES, Timeline
from .items import Item

log = logging.getLogger(__name__)

RECORDS = "_items"
STAGING = "_staging"
LOCK = "_lock"
STATUS = "status.parquet"
PART = "part.parquet"
STATUS_COLUMNS = ("recording_id", "path", "sha256", "state", "reason", "seconds")


class BatchDataset:
    """The folder ``out`` of a batch: its committed items, and the writing of new ones."""

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)

    def partition(self, table: str, rid: str) -> Path:
        return self.out / table / f"recording={rid}"

    def records(self) -> dict[str, dict]:
        """``{recording_id: record}`` of every committed item."""
        folder = self.out / RECORDS
        if not folder.is_dir():
            return {}
        return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold ``out`` for one writer: a second batch on the same folder would delete what the
        first is writing. The lock dies with its process, ``kill -9`` included.

        Raises:
            MserError: ``out`` is a file, cannot be written, or another batch holds it.
        """
        if self.out.exists() and not self.out.is_dir():
            raise MserError(f"{self.out}: exists and is not a folder")
        try:
            (self.out / RECORDS).mkdir(parents=True, exist_ok=True)
            handle = open(self.out / LOCK, "a")
        except OSError as e:
            raise MserError(f"{self.out}: cannot write there ({e.strerror})") from e
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as e:
                raise MserError(f"{self.out}: another mser batch is writing there") from e
            yield

    def prepare(self) -> dict[str, dict]:
        """Remove what a killed run left (call under :meth:`lock`): the staging folder and every
        partition without a commit record. Returns :meth:`records`."""
        shutil.rmtree(self.out / STAGING, ignore_errors=True)
        records = self.records()
        for table in TABLES:
            for folder in (self.out / table).glob("recording=*"):
                if folder.name.removeprefix("recording=") not in records:
                    log.info("removing %s: left uncommitted by an earlier run", folder)
                    shutil.rmtree(folder)
        return records

    def commit(self, item: Item, timeline: Timeline, seconds: float) -> dict:
        """Add ``item``'s timeline to the dataset (each table gains ``recording_id`` and
        ``source_path`` columns first) and write its record; returns the record."""
        rid = item.recording_id
        source = str(item.path.resolve())
        stage = self.out / STAGING / f"{rid}.{uuid.uuid4().hex[:8]}"
        tagged = {
            name: getattr(timeline, name).assign(recording_id=rid, source_path=source)[
                ["recording_id", "source_path", *getattr(timeline, name).columns]
            ]
            for name in TABLES
        }
        Timeline(**tagged, metadata=timeline.metadata).save(stage / "timeline")
        for name in TABLES:
            folder = stage / name
            folder.mkdir()
            os.rename(stage / "timeline" / f"{name}.parquet", folder / PART)
        for name in TABLES:
            target = self.partition(name, rid)
            target.parent.mkdir(exist_ok=True)
            shutil.rmtree(target, ignore_errors=True)  # uncommitted: a committed item is never analysed again
            os.rename(stage / name, target)
        record = {"recording_id": rid, "path": str(item.path), "source_path": source, "sha256": item.sha256, "seconds": seconds}
        with atomic_output(self.out / RECORDS / f"{rid}.json") as tmp:
            tmp.write_text(json.dumps(record))
        shutil.rmtree(stage, ignore_errors=True)
        return record

    def remove_superseded(self, items: list[Item]) -> list[str]:
        """Remove committed items whose file is among ``items`` but whose content (or options)
        differ from now: the dataset keeps one result per file. Returns the removed ids."""
        current = {str(i.path.resolve()): i.recording_id for i in items}
        removed = []
        for rid, record in self.records().items():
            now = current.get(record["source_path"], rid)
            if now != rid:
                (self.out / RECORDS / f"{rid}.json").unlink()  # uncommitted from here on: gone by the next start if killed now
                for name in TABLES:
                    shutil.rmtree(self.partition(name, rid), ignore_errors=True)
                removed.append(rid)
        return removed

    def write_status(self, rows: list[dict]) -> Path:
        """Write ``status.parquet`` (columns :data:`STATUS_COLUMNS`) atomically; ends the run's staging."""
        status = pd.DataFrame(rows, columns=list(STATUS_COLUMNS))
        target = self.out / STATUS
        with atomic_output(target) as tmp:
            status.to_parquet(tmp, index=False)
        shutil.rmtree(self.out / STAGING, ignore_errors=True)
        return target


def open_table(out: str | os.PathLike, table: str) -> ds.Dataset:
    """One table (``segments``, ``words`` or ``frames``) of the batch in ``out`` as one pyarrow
    dataset over every recording.

    Its schema is the union of the recordings' schemas: an audio-only recording has no face
    columns in its files, and reads as nulls there (DuckDB: ``union_by_name=true``).
    """
    if table not in TABLES:
        raise ValueError(f"table must be one of {TABLES}, not {table!r}")
    files = sorted(str(p) for p in Path(out, table).glob(f"recording=*/{PART}"))
    schemas = [pq.read_schema(f).remove_metadata() for f in files]
    schema = pa.unify_schemas(schemas, promote_options="permissive") if schemas else pa.schema([])
    return ds.dataset(files, schema=schema, format="parquet")
