"""Where items are analysed: local worker processes or Ray actors, each holding one Analyzer
(so each loads the models once) and returning an :class:`Outcome` per item.

Neither engine writes: the caller commits each outcome as it arrives, so a Ray worker needs the
media at the same path (shared storage), not write access to the output.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import MserError
from ..options import AnalysisOptions

if TYPE_CHECKING:
    from ..timeline import Timeline

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")

WORKER_MEMORY = 1.8e9
"""bytes: peak resident memory of one tri-modal worker (``benchmarks/batch_bench.py``: 1771 MB on the talking heads)."""

Job = tuple[int, Path]
"""an item to analyse: its index among the batch's inputs, and its path."""


@dataclasses.dataclass
class Outcome:
    """The result of one item: a timeline, or the one-line reason it failed."""

    index: int
    timeline: Timeline | None
    """None on failure."""
    reason: str | None
    seconds: float
    """wall-clock seconds the analysis took in the worker."""


def analyze_job(analyzer, job: Job) -> Outcome:
    """Analyse one job with ``analyzer``; a failure becomes an Outcome, never an exception."""
    index, path = job
    start = time.perf_counter()
    try:
        timeline = analyzer.analyze(path)
    except MserError as e:  # bad input: reported, the batch goes on
        return Outcome(index, None, one_line(str(e)), time.perf_counter() - start)
    except Exception as e:  # noqa: BLE001 - one unexpected failure must not stop thousands of other items
        log.debug("%s failed", path, exc_info=True)
        return Outcome(index, None, one_line(f"{path}: {type(e).__name__}: {e}"), time.perf_counter() - start)
    return Outcome(index, timeline, None, time.perf_counter() - start)


def one_line(text: str) -> str:
    return " ".join(text.split())


# --- local worker processes --------------------------------------------------------------------

_ANALYZER = None
"""the worker process's Analyzer, made by :func:`_start_worker`."""


def _start_worker(options: AnalysisOptions) -> None:
    from ..pipeline import Analyzer

    global _ANALYZER
    _ANALYZER = Analyzer(options)


def _work(job: Job) -> Outcome:
    return analyze_job(_ANALYZER, job)


def available_memory() -> int:
    """Bytes of memory available to new processes (``MemAvailable``; free pages where that is unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_workers() -> int:
    """Local workers: one per core, as many as the available memory holds (:data:`WORKER_MEMORY` each), at least 1."""
    return max(1, min(usable_cores(), int(available_memory() // WORKER_MEMORY)))


def run_local(jobs: list[Job], options: AnalysisOptions, workers: int) -> Iterator[Outcome]:
    """Analyse ``jobs`` on ``workers`` spawned processes; yields outcomes as they finish."""
    context = multiprocessing.get_context("spawn")  # no fork of a parent holding threads or models
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(options,))
    try:  # as_completed drops each future it yields: a committed timeline is not kept until the end
        for future in as_completed([pool.submit(_work, job) for job in jobs]):
            yield future.result()
    finally:  # stopped early (Ctrl-C, a failed commit): wait for the items running, not for the queue
        pool.shutdown(wait=True, cancel_futures=True)


# --- Ray actors ----------------------------------------------------------------------------------


class _Worker:
    """A Ray actor's state: one Analyzer for every item it is given."""

    def __init__(self, options: AnalysisOptions):
        from ..pipeline import Analyzer

        self.analyzer = Analyzer(options)

    def analyze(self, job: Job) -> Outcome:
        return analyze_job(self.analyzer, job)


def run_ray(jobs: list[Job], options: AnalysisOptions, workers: int | None, address: str | None) -> Iterator[Outcome]:
    """Analyse ``jobs`` on Ray actors of ``options.threads`` CPUs each; yields outcomes as they finish.

    Connects to the cluster at ``address`` (``auto``, ``host:port``) unless Ray is already
    initialised in this process; None starts a new local Ray instance. ``workers`` None: as many
    actors as the cluster's CPUs hold.
    """
    try:
        import ray
        from ray.util import ActorPool
    except ImportError as e:
        raise MserError("--engine ray needs Ray: pip install 'multimodal-ser[batch]'") from e
    if not ray.is_initialized():
        try:
            # the actors' own output (native MediaPipe logs) reaches the driver only for debugging
            # address "local" starts a new instance rather than joining whatever cluster ran last here
            ray.init(address=address or "local", logging_level=logging.WARNING, log_to_driver=log.isEnabledFor(logging.DEBUG))
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise MserError(f"cannot connect to the Ray cluster at {address}: {one_line(str(e))}") from e
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1) // options.threads))
    actor = ray.remote(num_cpus=options.threads)(_Worker)
    actors = [actor.remote(options) for _ in range(min(workers, len(jobs)))]
    try:
        yield from ActorPool(actors).map_unordered(lambda a, job: a.analyze.remote(job), jobs)
    finally:  # the models leave the cluster with the batch
        for a in actors:
            ray.kill(a)
