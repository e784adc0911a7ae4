"""The HTML report: one self-contained file, the data as inline JSON drawn by the inline ``report.js``."""

from __future__ import annotations

import html
import json
import math
from importlib import resources

import pandas as pd

from .data import LANES

STYLE = """
body { font: 14px/1.4 sans-serif; margin: 16px 24px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 17px; margin-top: 28px; }
canvas { width: 100%; display: block; border: 1px solid #ddd; cursor: crosshair; }
table { border-collapse: collapse; margin: 8px 0; font-size: 12px; }
td, th { border: 1px solid #ddd; padding: 2px 6px; text-align: left; vertical-align: top; }
.detail { min-height: 3em; margin: 6px 0; padding: 6px; background: #f3f6fb; border-left: 3px solid #5b7db1; }
#tip { position: absolute; display: none; max-width: 360px; background: #fff; border: 1px solid #999; padding: 6px;
       font-size: 12px; pointer-events: none; box-shadow: 0 2px 6px rgba(0, 0, 0, 0.2); }
.legend span { display: inline-block; padding: 0 6px; margin-right: 4px; color: #fff; border-radius: 3px; }
.note { color: #555; font-size: 12px; }
"""

COLORS = {"neutral": "#a0a0a0", "happy": "#f2b701", "sad": "#3969ac", "angry": "#e73f74", "fearful": "#7f3c8d", "disgust": "#11a579", "surprised": "#f97b22"}
"""Emotion colours of the HTML (passed to report.js) and the PNG."""

SENTIMENT_COLORS = {"negative": "#e73f74", "neutral": "#a0a0a0", "positive": "#11a579"}
"""Colours of the words' sentiment stripe."""

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f"]
"""Colours of speakers and faces, in order."""

SUMMARY_ROWS = 300
"""At most this many summary rows are shown per recording (the table keeps all)."""


def _json(value) -> str:
    """JSON that is safe inside a ``<script>`` element."""
    return json.dumps(value, separators=(",", ":")).replace("</", "<\\/")


def _table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>" for row in frame.itertuples(index=False))
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return html.escape(str(value))


def overview(recordings: list[dict]) -> pd.DataFrame:
    """One row per recording: duration, segments, speakers, the fused label holding most time."""
    rows = []
    for rec in recordings:
        seg = rec["seg"]
        seconds: dict[str, float] = {}
        for s, e, k in zip(seg["s"], seg["e"], seg["fused"]):
            if k >= 0:
                seconds[rec["labels"][k]] = seconds.get(rec["labels"][k], 0.0) + e - s
        rows.append({"recording": rec["name"], "use case": rec["pipeline"], "duration (s)": rec["duration"], "segments": len(seg["s"]),
                     "speakers": ", ".join(rec["speakers"]), "most fused time": max(seconds, key=seconds.get) if seconds else ""})
    return pd.DataFrame(rows)


def render(recordings: list[dict], summaries: list[pd.DataFrame | None], title: str) -> str:
    """The complete HTML document for ``recordings`` (from :func:`multimodal_ser.report.data.recording`)."""
    lanes = [[name, short, full] for name, (short, full) in LANES.items()]
    legend = "".join(f'<span style="background:{c}">{html.escape(n)}</span>' for n, c in COLORS.items())
    sources = _table(pd.DataFrame([{"lane": n, "inferred from": full} for n, (_, full) in LANES.items()]))
    parts = [
        f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        (
            "<p class=note>Perceived emotion as inferred by models, not what anyone felt; unreliable across people and "
            "conditions; never a basis for a decision about a person. EU AI Act art. 5(1)(f): no emotion inference on employees "
            "or students in EU workplaces and schools.</p>"
        ),
        f"<p class=legend>{legend}</p>",
        "<details><summary>What each lane was inferred from</summary>" + sources + "</details>",
    ]
    if len(recordings) > 1:
        parts.append("<h2>Recordings</h2>" + _table(overview(recordings)))
    for rec, summary in zip(recordings, summaries):
        parts.append(f'<section class=recording><h2>{html.escape(rec["name"])} <small class=note>({html.escape(rec["pipeline"])}, '
                     f'{rec["duration"]:.1f} s)</small></h2><canvas></canvas>'
                     '<div class=detail>Hover a lane to read a segment, click to keep it here; wheel to zoom, drag to pan, '
                     "double click to reset.</div>")
        if summary is not None:
            summary = summary[~(summary["metric"].str.startswith("share_") & (summary["value"] == 0))]  # emotions never given
            shown = summary.head(SUMMARY_ROWS)
            more = f"<p class=note>{len(summary) - SUMMARY_ROWS} more rows in summary.parquet</p>" if len(summary) > SUMMARY_ROWS else ""
            parts.append(f"<details open><summary><b>Summary ({html.escape(rec['pipeline'])})</b>, from summary.parquet "
                         "(emotion shares of 0 left out)</summary>" + _table(shown) + more + "</details>")
        parts.append("</section>")
    script = resources.files(__package__).joinpath("report.js").read_text(encoding="utf-8")
    parts += [
        "<div id=tip></div>",
        f'<script id=mser-data type="application/json">{_json(recordings)}</script>',
        f'<script id=mser-lanes type="application/json">{_json(lanes)}</script>',
        f'<script id=mser-colors type="application/json">{_json({"emotions": COLORS, "sentiments": SENTIMENT_COLORS, "palette": PALETTE})}</script>',
        f"<script>{script}</script></body></html>",
    ]
    return "\n".join(parts)
