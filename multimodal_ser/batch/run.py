"""``run_batch``: plan the items, skip what is done, analyse the rest on an engine, commit each."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from ..options import AnalysisOptions
from ..validate import valid_int
from .dataset import BatchDataset
from .engines import ENGINES, Job, Outcome, default_workers, run_local, run_ray, usable_cores
from .items import Item, make_item

log = logging.getLogger(__name__)


def run_batch(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    options: AnalysisOptions = AnalysisOptions(),
    engine: str = "local",
    workers: int | None = None,
    address: str | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """Analyse every input into the dataset ``out``; resumable: what a former run committed with
    the same content and options is skipped, what it left half-done is redone.

    Args:
        inputs: media files (see :func:`multimodal_ser.batch.read_inputs`).
        out: the dataset folder: ``OUT/{segments,words,frames}/recording=<id>/part.parquet``,
            each table with ``recording_id`` and ``source_path`` columns, and ``OUT/status.parquet``.
        options: the analysis options; ``threads`` is each Ray actor's CPUs (the local engine
            shares the cores among its workers instead).
        engine: ``local`` (worker processes on this machine) or ``ray`` (actors on a Ray cluster).
        workers: worker processes or actors (default: as many as cores and memory allow).
        address: with ``engine="ray"``, the cluster (``auto``, ``host:port``; default: start a local Ray).
        progress: show a progress bar over the items.

    Returns:
        The status table, one row per input: ``recording_id``, ``path``, ``sha256``, ``state``
        (done, failed or skipped), ``reason`` (one line; empty when done), ``seconds`` (analysis
        wall-clock time in a worker; for skipped items, that of the run that did them).

    Raises:
        ValueError: an unknown engine, a bad worker count, or options the models refuse.
        MserError: ``out`` cannot be written, or the Ray cluster cannot be reached.
    """
    from ..pipeline import Analyzer

    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, not {engine!r}")
    if workers is not None:
        valid_int("workers", workers, 1)
    if address is not None and engine != "ray":
        raise ValueError("address is for engine 'ray'")
    Analyzer(options).check()  # a bad option fails here, not once per item
    dataset = BatchDataset(out)
    with dataset.lock():
        done = dataset.prepare()
        items = [make_item(Path(p), options) for p in inputs]
        rows, todo = _plan(items, done)
        log.info("%d input(s): %d to analyse, %d already done", len(items), len(todo), sum(r.get("state") == "skipped" for r in rows))
        outcomes = _outcomes(todo, engine, options, workers, address) if todo else ()
        for outcome in tqdm(outcomes, total=len(todo), unit="recording", disable=not progress):
            item = items[outcome.index]
            if outcome.timeline is None:
                log.info("failed: %s", outcome.reason)
                rows[outcome.index] = _row(item, "failed", outcome.reason, outcome.seconds)
            else:
                dataset.commit(item, outcome.timeline, outcome.seconds)
                rows[outcome.index] = _row(item, "done", "", outcome.seconds)
        for rid in dataset.remove_superseded([i for i in items if i.recording_id is not None]):
            log.info("removed recording %s: its file has changed since", rid)
        dataset.write_status(rows)
    return pd.DataFrame(rows)


def _plan(items: list[Item], done: dict[str, dict]) -> tuple[list[dict], list[tuple[int, Path]]]:
    """The status row of each item that needs no analysis (unreadable, done before, a duplicate),
    ``{}`` for the others, and those others as ``(index, path)``."""
    rows: list[dict] = [{}] * len(items)
    todo, first = [], {}
    for index, item in enumerate(items):
        rid = item.recording_id
        if item.error is not None:
            rows[index] = _row(item, "failed", item.error)
        elif rid in done:
            rows[index] = _row(item, "skipped", "done in an earlier run", done[rid]["seconds"])
        elif rid in first:
            rows[index] = _row(item, "skipped", f"same content as {items[first[rid]].path}")
        else:
            first[rid] = index
            todo.append((index, item.path))
    return rows, todo


def _jobs(todo: list[tuple[int, Path]], pack: bool, workers: int | None) -> list[Job]:
    """One item per job; with ``pack``, consecutive items in jobs of up to
    :data:`~multimodal_ser.pipeline.PREPARE_GROUP` (fewer when that would leave one of ``workers``
    idle), so that their short recordings are encoded together."""
    from ..pipeline import PREPARE_GROUP

    size = 1
    if pack:
        size = PREPARE_GROUP if workers is None else max(1, min(PREPARE_GROUP, -(-len(todo) // workers)))
    return [tuple(todo[first : first + size]) for first in range(0, len(todo), size)]


def _outcomes(todo: list[tuple[int, Path]], engine: str, options: AnalysisOptions, workers: int | None, address: str | None) -> Iterator[Outcome]:
    if engine == "ray":
        return run_ray(_jobs(todo, options.pack, workers), options, workers, address)
    workers = min(workers or default_workers(), len(todo))
    return run_local(_jobs(todo, options.pack, workers), dataclasses.replace(options, threads=max(1, usable_cores() // workers)), workers)


def _row(item: Item, state: str, reason: str, seconds: float = 0.0) -> dict:
    return {"recording_id": item.recording_id, "path": str(item.path), "sha256": item.sha256, "state": state, "reason": reason, "seconds": seconds}
