"""``mser report``: timelines drawn as a self-contained HTML file (inline data and script, no network)
and a PNG. ``data.py`` turns a timeline into lanes, ``html.py`` and ``png.py`` draw them."""

from __future__ import annotations

import os
from pathlib import Path

from ..files import atomic_output
from ..timeline import load_summary, load_timeline
from . import data, html, png


def write_report(directories: list[str | os.PathLike], out: str | os.PathLike, *, title: str | None = None) -> tuple[Path, Path]:
    """Write the HTML report ``out`` and the PNG beside it (``out`` with ``.png``) for timeline folders.

    Args:
        directories: folders written by ``mser analyze`` or a use case (whose ``summary.parquet``
            is shown when present); one section each, in order.
        out: the HTML file.

    Returns:
        ``(html_path, png_path)``.

    Raises:
        MserError: a folder is not a readable timeline (naming it).
    """
    out = Path(out)
    directories = [Path(d) for d in directories]
    recordings, summaries = [], []
    for directory in directories:
        summary = load_summary(directory)
        recordings.append(data.recording(load_timeline(directory), directory.name or str(directory), summary))
        summaries.append(summary)
    title = title or ("multimodal-ser report: " + (recordings[0]["name"] if len(recordings) == 1 else f"{len(recordings)} recordings"))
    document = html.render(recordings, summaries, title)
    picture = out.with_suffix(".png")
    with atomic_output(picture) as tmp:
        png.render(recordings, tmp)
    with atomic_output(out) as tmp:
        tmp.write_text(document, encoding="utf-8")
    return out, picture
