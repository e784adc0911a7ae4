"""The PNG report: each recording's lanes drawn with matplotlib, each lane named with its source."""

from __future__ import annotations

import os

from matplotlib.collections import PolyCollection
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure  # no pyplot: the Agg canvas, no global state
from matplotlib.patches import Patch

from .data import LANES
from .html import COLORS, PALETTE

LABEL_KEYS = {"voice": ("voice", "voiceC"), "words' emotion": ("text", "textC"), "face": ("face", "faceC"), "fused": ("fused", "conf")}


def _bars(ax, spans, y: float, heights, colors, alphas=None) -> None:
    """One collection of bars: ``spans`` [(start, width)] (s), each with its height, colour and opacity."""
    if not spans:
        return
    rgba = [to_rgba(c, a) for c, a in zip(colors, alphas or [1.0] * len(colors))]
    ax.add_collection(PolyCollection([[(s, y), (s + w, y), (s + w, y + h), (s, y + h)] for (s, w), h in zip(spans, heights)],
                                     facecolors=rgba, linewidths=0))


def _lane(ax, rec: dict, name: str, y: float) -> None:
    """Draw lane ``name`` of ``rec`` between heights ``y`` and ``y + 0.8``."""
    seg = rec["seg"]
    spans = list(zip(seg["s"], [e - s for s, e in zip(seg["s"], seg["e"])]))
    if name == "speakers":
        keep = [i for i, k in enumerate(seg["spk"]) if k >= 0]
        _bars(ax, [spans[i] for i in keep], y, [0.8] * len(keep), [PALETTE[seg["spk"][i] % len(PALETTE)] for i in keep])
    elif name == "words":
        words = rec["words"]
        _bars(ax, [(s, e - s) for s, e in zip(words["s"], words["e"])], y, [0.8] * len(words["s"]), ["#a9bcd8"] * len(words["s"]))
    elif name in LABEL_KEYS:
        key, conf = LABEL_KEYS[name]
        keep = [i for i, k in enumerate(seg[key]) if k >= 0]
        _bars(ax, [spans[i] for i in keep], y, [0.8] * len(keep), [COLORS[rec["labels"][seg[key][i]]] for i in keep],
              [0.35 + 0.65 * (1.0 if seg[conf][i] is None else seg[conf][i]) for i in keep])
    elif name in ("confidence", "agreement"):
        values = seg["conf" if name == "confidence" else "agr"]
        keep = [i for i, v in enumerate(values) if v is not None]
        _bars(ax, [spans[i] for i in keep], y, [0.8 * values[i] for i in keep],
              ["#e8a33d" if name == "agreement" and values[i] < 0.75 else "#5b7db1" for i in keep])
    else:
        eng = rec["eng"]
        for f, values in enumerate(eng["v"]):
            ax.plot([t + 0.5 for t in eng["t"]], [y + 0.8 * v if v is not None else float("nan") for v in values],
                    color=PALETTE[f % len(PALETTE)], linewidth=1)


def render(recordings: list[dict], path: str | os.PathLike, *, dpi: int = 80) -> None:
    """Write a PNG with one panel of lanes per recording to ``path``."""
    names = list(LANES)
    fig = Figure(figsize=(12, 0.42 * len(names) + 1.0 + (len(recordings) - 1) * (0.42 * len(names) + 0.7)))
    axes = fig.subplots(len(recordings), 1, squeeze=False)
    for ax, rec in zip(axes[:, 0], recordings):
        for row, name in enumerate(names):
            y = len(names) - 1 - row
            if rec["present"][name]:
                _lane(ax, rec, name, y)
            else:
                ax.text(0, y + 0.3, "  not analysed", fontsize=7, color="#999", style="italic")
        ax.set_yticks([len(names) - 1 - r + 0.4 for r in range(len(names))])
        ax.set_yticklabels([f"{n}\n({LANES[n][0]})" for n in names], fontsize=7)
        ax.set_xlim(0, max(rec["duration"], 1.0))
        ax.set_ylim(-0.1, len(names))
        ax.set_xlabel("seconds", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(f"{rec['name']} ({rec['pipeline']})", fontsize=9, loc="left")
    handles = [Patch(color=c, label=n) for n, c in COLORS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=dpi, format="png")
