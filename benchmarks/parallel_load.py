"""Several ``mser analyze`` processes at once on one machine: exit status, wall time, peak memory.

Each analysis is its own process; its peak resident memory comes from ``os.wait4``'s resource
usage (the kernel's ``ru_maxrss``, KiB on Linux), so nothing is sampled. Printed as JSON.

    python benchmarks/parallel_load.py                      # the sample media, three at once
    python benchmarks/parallel_load.py a.mp4 b.wav --options "--modalities audio"
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MEDIA = [REPO / "sample_media" / "interview.mp4", REPO / "sample_media" / "call_stereo.flac", REPO / "sample_media" / "interview.mp4"]


def run_parallel(media: list[Path], out: Path, options: list[str] = ()) -> list[dict]:
    """Start one ``mser analyze`` per file in ``media`` at once (output ``out/<i>``) and wait for all.

    Returns, per process: ``media``, ``status`` (exit code), ``seconds`` (wall time from the common
    start), ``peak_rss_mib`` (MiB) and ``stderr``.
    """
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    start = time.monotonic()
    running = {}
    results: list[dict] = [{}] * len(media)
    with contextlib.ExitStack() as logs:
        for i, path in enumerate(media):
            command = [sys.executable, "-m", "multimodal_ser.cli", "analyze", str(path), "--out", str(out / str(i)), *options]
            log = logs.enter_context(tempfile.TemporaryFile("w+"))  # not a pipe: a full pipe would stall the process
            process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log)
            running[process.pid] = (i, path, process, log)
        while running:
            time.sleep(0.2)
            for pid in list(running):
                done, status, usage = os.wait4(pid, os.WNOHANG)
                if done == 0:
                    continue
                i, path, process, log = running.pop(pid)
                process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
                log.seek(0)
                results[i] = {
                    "media": str(path),
                    "status": process.returncode,
                    "seconds": round(time.monotonic() - start, 1),
                    "peak_rss_mib": round(usage.ru_maxrss / 1024),
                    "stderr": log.read(),
                }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("media", nargs="*", type=Path, default=DEFAULT_MEDIA, help="one process per file (default: the sample media, three)")
    parser.add_argument("--options", type=shlex.split, default=[], help="options for every 'mser analyze', as one string")
    args = parser.parse_args()
    options = args.options
    with tempfile.TemporaryDirectory() as out:
        results = run_parallel(args.media, Path(out), options)
    print(json.dumps({"cpus": os.cpu_count(), "options": options, "processes": results}, indent=2))
    return 0 if all(r["status"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
