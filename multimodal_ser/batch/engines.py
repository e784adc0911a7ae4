"""Where items are analysed: local worker processes or Ray actors, each holding one Analyzer
(so each loads the models once) and returning an :class:`Outcome` per item.

Neither engine writes: the caller commits each outcome as it arrives, so a Ray worker needs the
media at the same path (shared storage), not write access to the output.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import MserError
from ..options import AnalysisOptions

if TYPE_CHECKING:
    from ..timeline import Timeline

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")

WORKER_MEMORY = 2.1e9
"""bytes: peak resident memory of one tri-modal worker (``benchmarks/bench.py``: 2059 MB on the sample interview,
its face pass running beside the speech branch; ``benchmarks/batch_bench.py``: 1807 MB on the talking heads)."""

Job = tuple[tuple[int, Path], ...]
"""the items one worker call analyses (several with the ``pack`` option, prepared together): each
item's index among the batch's inputs, and its path."""


@dataclasses.dataclass
class Outcome:
    """The result of one item: a timeline, or the one-line reason it failed."""

    index: int
    timeline: Timeline | None
    """None on failure."""
    reason: str | None
    seconds: float
    """wall-clock seconds the analysis took in the worker."""


def analyze_job(analyzer, job: Job) -> list[Outcome]:
    """Analyse one job's items with ``analyzer`` (prepared together: :meth:`Analyzer.prepare`);
    a failure becomes an Outcome, never an exception."""
    analyzer.prepare([path for _, path in job])
    return [_analyze_item(analyzer, index, path) for index, path in job]


def _analyze_item(analyzer, index: int, path: Path) -> Outcome:
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


def _work(job: Job) -> list[Outcome]:
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


WORKER_DIED = "the worker analysing it died (killed, out of memory, or a crash in native code)"


def run_local(jobs: list[Job], options: AnalysisOptions, workers: int, *, work: Callable[[Job], list[Outcome]] = _work) -> Iterator[Outcome]:
    """Analyse ``jobs`` on ``workers`` spawned processes; yields outcomes as they finish.

    A worker that dies (killed, out of memory, a crash in native code) takes the pool down with it
    and no exception says which item did it. Then the items in flight are tried again, each alone in
    a fresh process, so the one that kills its worker fails with that reason and the others finish;
    the items still queued go on in a fresh pool. ``work`` runs one job in a worker (tests replace it).
    """
    queue = collections.deque(jobs)
    while queue:
        in_flight = yield from _run_pool(queue, options, workers, work)
        alone = [(item,) for job in in_flight for item in job]
        for job in alone:
            if len(alone) == 1 or (yield from _run_pool(collections.deque([job]), options, 1, work)):
                (index, path), = job
                yield Outcome(index, None, f"{path}: {WORKER_DIED}", 0.0)


def _run_pool(queue: collections.deque[Job], options: AnalysisOptions, workers: int, work: Callable[[Job], list[Outcome]]):
    """Run jobs from ``queue`` in one pool, at most ``workers`` at a time (so those in flight are
    known), yielding their outcomes; returns the jobs in flight when a worker died ([] otherwise)."""
    context = multiprocessing.get_context("spawn")  # no fork of a parent holding threads or models
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(options,))
    running: dict[Future, Job] = {}
    try:
        while queue or running:
            while queue and len(running) < workers:
                job = queue.popleft()
                running[pool.submit(work, job)] = job
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                done, _ = wait(running)  # a dead worker fails every job in flight
            in_flight = []
            for future in done:  # yielded one by one: a committed timeline is not kept until the end
                job = running.pop(future)
                if isinstance(future.exception(), BrokenProcessPool):
                    in_flight.append(job)
                else:
                    yield from future.result()
            if in_flight:
                return in_flight
        return []
    finally:  # stopped early (Ctrl-C, a failed commit, a dead worker): wait for the items running, not for the queue
        pool.shutdown(wait=True, cancel_futures=True)


# --- Ray actors ----------------------------------------------------------------------------------


class _Worker:
    """A Ray actor's state: one Analyzer for every item it is given."""

    def __init__(self, options: AnalysisOptions):
        from ..pipeline import Analyzer

        self.analyzer = Analyzer(options)

    def analyze(self, job: Job) -> list[Outcome]:
        return analyze_job(self.analyzer, job)


def run_ray(
    jobs: list[Job], options: AnalysisOptions, workers: int | None, address: str | None, *, worker: type = _Worker
) -> Iterator[Outcome]:
    """Analyse ``jobs`` on Ray actors of ``options.threads`` CPUs each; yields outcomes as they finish.

    Connects to the cluster at ``address`` (``auto``, ``host:port``) unless Ray is already
    initialised in this process; None starts a new local Ray instance. ``workers`` None: as many
    actors as the cluster's CPUs hold. ``worker`` is the actor class (tests replace it).
    """
    try:
        import ray
        from ray.exceptions import RayActorError
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
    actor = ray.remote(num_cpus=options.threads)(worker)
    actors = [actor.remote(options) for _ in range(min(workers, len(jobs)))]
    idle, queue, running = list(actors), collections.deque(jobs), {}  # running: ObjectRef -> (actor, job)
    try:
        while queue or running:
            while queue and idle:
                job = queue.popleft()
                a = idle.pop()
                running[a.analyze.remote(job)] = (a, job)
            [ref], _ = ray.wait(list(running), num_returns=1)
            a, job = running.pop(ref)
            try:
                outcomes = ray.get(ref)
            except RayActorError:  # its process died: a lone item fails, a job of several is retried item by item
                if len(job) == 1:
                    (index, path), = job
                    outcomes = [Outcome(index, None, f"{path}: {WORKER_DIED}", 0.0)]
                else:
                    outcomes = []
                    queue.extendleft((item,) for item in reversed(job))
                ray.kill(a)
                a = actor.remote(options)
                actors.append(a)
            idle.append(a)
            yield from outcomes
    finally:  # the models leave the cluster with the batch
        for a in actors:
            ray.kill(a)
