"""Batch throughput, side by side in one run (part of ``make bench``).

Each configuration runs in a fresh Python process on a fresh output folder: recordings per hour
with 1 and with 2 local workers (wall clock from the call to ``run_batch`` to its return, worker
start included), the speed-up, the peak resident memory of the largest worker; then a worker's
cold start: importing the pipeline and analysing a first recording (models loaded on the way)
against analysing it again, and the light start of ``mser --help`` (best of 3). Last, ``--short`` short clips (RAVDESS, 3-5 s each, when
``../shared/data`` has them) with 2 workers, without and with the ``pack`` option.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TALKING_HEADS = REPO.parent / "shared" / "data" / "talking-heads"
RAVDESS = REPO.parent / "shared" / "data" / "ravdess-speech-16k"
SAMPLE_MEDIA = [REPO / "sample_media" / "interview.mp4", REPO / "sample_media" / "call_stereo.flac"]

_BATCH = """
import json, resource, sys, tempfile, time
from multimodal_ser import AnalysisOptions
from multimodal_ser.batch import run_batch
media, workers, pack = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "pack"
with tempfile.TemporaryDirectory() as out:
    start = time.perf_counter()
    status = run_batch(media, out, options=AnalysisOptions(language="en", pack=pack), workers=workers)
    seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "done": int((status["state"] == "done").sum()),
                  "analysis_seconds": float(status["seconds"].sum()),
                  "worker_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""

_COLD = """
import json, sys, time
start = time.perf_counter()
from multimodal_ser import AnalysisOptions
from multimodal_ser.pipeline import Analyzer
analyzer = Analyzer(AnalysisOptions(language="en", threads=1))
imported = time.perf_counter() - start
analyzer.analyze(sys.argv[1])
first = time.perf_counter() - start
analyzer.analyze(sys.argv[1])
print(json.dumps({"import": imported, "first": first, "again": time.perf_counter() - start - first}))
"""


def _run(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise SystemExit(f"benchmark step failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _help_seconds(repeats: int = 3) -> float:
    """Fastest of ``repeats`` wall-clock runs of ``mser --help`` (the installed command, a fresh process each)."""
    command = shutil.which("mser", path=str(Path(sys.executable).parent)) or "mser"
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([command, "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return min(times)


def _short_clips(n: int) -> list[Path]:
    """``n`` RAVDESS clips, every actor in turn (none without the data)."""
    actors = sorted(RAVDESS.glob("Actor_*"))
    files = [sorted(actor.glob("*.flac")) for actor in actors]
    return [files[k % len(files)][k // len(files)] for k in range(n)] if files else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("media", nargs="*", type=Path, help="recordings (default: the talking heads in ../shared/data, else the sample media)")
    parser.add_argument("--short", type=int, default=48, help="short RAVDESS clips for the pack comparison (0: none)")
    args = parser.parse_args()
    media = args.media or sorted(TALKING_HEADS.glob("*.mp4")) or SAMPLE_MEDIA
    paths = json.dumps([str(m) for m in media])
    print(f"batch of {len(media)} recordings ({media[0].parent}), audio+text+face, 'language en'")
    print(f"{'workers':>7} {'seconds':>8} {'recordings/hour':>16} {'speed-up':>9} {'worker peak MB':>15}")
    runs = {}
    for workers in (1, 2):
        r = runs[workers] = _run(_BATCH, paths, str(workers), "alone")
        assert r["done"] == len(media), r
        print(f"{workers:7d} {r['seconds']:8.1f} {3600 * len(media) / r['seconds']:16.0f} {runs[1]['seconds'] / r['seconds']:9.2f} {r['worker_peak_mb']:15.0f}")
    cold = _run(_COLD, str(media[0]))
    print(f"worker cold start on {media[0].name}: import {cold['import']:.1f} s; first recording {cold['first']:.1f} s "
          f"against {cold['again']:.1f} s warm: {cold['first'] - cold['again']:.1f} s to start")
    cold["mser_help"] = _help_seconds()
    print(f"mser --help: {cold['mser_help']:.2f} s (target under 0.5 s; torch is not imported)")
    short = _short_clips(args.short)
    if short:
        print(f"{len(short)} short clips ({short[0].parent.parent.name}), audio+text, 'language en', 2 workers")
        for mode in ("alone", "pack"):
            r = runs[f"short_{mode}"] = _run(_BATCH, json.dumps([str(m) for m in short]), "2", mode)
            assert r["done"] == len(short), r
            print(f"{mode:>7} {r['seconds']:8.1f} {3600 * len(short) / r['seconds']:16.0f} {runs['short_alone']['seconds'] / r['seconds']:9.2f} {r['worker_peak_mb']:15.0f}")
    out = REPO / "bench_out" / "batch_bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"media": [str(m) for m in media], "short": [str(m) for m in short], "runs": runs, "cold_start": cold}, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
