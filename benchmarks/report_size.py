"""Size and opening time of ``mser report`` for a long synthetic timeline, in a real headless Chromium.

    python benchmarks/report_size.py --minutes 30

Builds a timeline of that length (turns of 2-8 s, 2.5 words/s, two faces at 4 fps; the builder in
tests/timeline_factory.py), writes the report, loads it in Chromium and prints the HTML and PNG
sizes, the seconds to write them, and the page's own time from navigation start to the end of
drawing (``performance.now()`` when the script finishes, read from the DOM).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from browser import find_chromium, open_page
from timeline_factory import synthetic_timeline

from multimodal_ser.report import write_report
from pipelines.call import call_summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        timeline = synthetic_timeline(args.minutes * 60)
        timeline.save(folder / "long", summary=call_summary(timeline.segments))
        started = time.perf_counter()
        html, png = write_report([folder / "long"], folder / "report.html")
        written = time.perf_counter() - started
        print(f"{args.minutes:g} min: {len(timeline.segments)} segments, {len(timeline.words)} words, {len(timeline.frames)} frame rows")
        print(f"HTML {html.stat().st_size / 1e6:.3f} MB, PNG {png.stat().st_size / 1e6:.3f} MB, written in {written:.2f} s")
        chromium = find_chromium()
        if chromium is None:
            print("no Chromium found: opening time not measured")
            return 0
        started = time.perf_counter()
        dom, console = open_page(chromium, html, folder / "shot.png")
        wall = time.perf_counter() - started
        drawn = re.search(r'data-render-ms="(\d+)"', dom)
        print(f"Chromium: drawn {drawn.group(1) if drawn else '?'} ms after navigation start; console messages: {len(console)}; "
              f"two headless loads (DOM + screenshot) took {wall:.1f} s of wall time including browser start")
    return 0


if __name__ == "__main__":
    sys.exit(main())
