"""Open an HTML file in a real headless Chromium: its DOM after scripts ran, its console errors, a screenshot."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CONSOLE = re.compile(r":CONSOLE[:(\d)]*\]? ?\"(?P<message>.*)\", source: (?P<source>\S+)")
"""A console message as Chromium logs it with ``--enable-logging=stderr``."""


def find_chromium() -> str | None:
    """The Chromium executable: ``$CHROMIUM`` or the first of :data:`NAMES` on PATH; None if none."""
    found = os.environ.get("CHROMIUM") or next((shutil.which(n) for n in NAMES if shutil.which(n)), None)
    return found


def _run(chromium: str, page: Path, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess:
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
               "--window-size=1280,1000", "--virtual-time-budget=5000", *extra, page.resolve().as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def open_page(chromium: str, page: Path, screenshot: Path) -> tuple[str, list[str]]:
    """Load ``page`` twice (DOM dump, then screenshot into ``screenshot``).

    Returns:
        ``(dom, console)``: the serialised DOM after the scripts ran, and every console message
        (``console.error``, uncaught exceptions, ...) of both loads.
    """
    dom = _run(chromium, page, "--dump-dom")
    shot = _run(chromium, page, f"--screenshot={screenshot}")
    console = [m.group("message") for run in (dom, shot) for m in CONSOLE.finditer(run.stderr)]
    return dom.stdout, console
