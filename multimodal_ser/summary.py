"""What a timeline says at a glance (``mser summary``): each source's emotions over the recording.

For each source (the voice, the words, the face, and the fused label) the share of the labelled
time it gives to each emotion, how much of the recording it labels at all, and how often the fused
label agrees with it. Shares are weighted by segment duration, so a long segment counts for more
than a short one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .evaluation.metrics import markdown_table
from .labels import EMOTIONS, MODALITIES
from .timeline import Timeline

FUSED = "fused"


def _sources(segments: pd.DataFrame) -> dict[str, str]:
    """``{source: its label column}`` for the modalities the timeline ran, then the fused label."""
    found = {m: f"{m}_label" for m in MODALITIES if f"{m}_label" in segments}
    if "label" in segments:
        found[FUSED] = "label"
    return found


def label_shares(segments: pd.DataFrame) -> pd.DataFrame:
    """Share of each source's labelled seconds given to each emotion.

    Returns:
        index :data:`~multimodal_ser.labels.EMOTIONS`, one column per source; each column sums to 1
        (NaN for a source that labels nothing).
    """
    seconds = (segments["end"] - segments["start"]).to_numpy(dtype=float)
    shares = {}
    for source, column in _sources(segments).items():
        labels = segments[column].to_numpy(dtype=object)
        per_label = np.array([seconds[labels == e].sum() for e in EMOTIONS])
        shares[source] = per_label / per_label.sum() if per_label.sum() > 0 else np.full(len(EMOTIONS), np.nan)
    return pd.DataFrame(shares, index=list(EMOTIONS))


def coverage_and_agreement(segments: pd.DataFrame) -> pd.DataFrame:
    """Per source: ``coverage`` (labelled seconds / all seconds) and ``agrees with fused`` (share of
    the seconds both label where the labels are equal; NaN when they share none).

    Returns:
        one row per source, columns ``coverage`` and ``agrees with fused``.
    """
    seconds = (segments["end"] - segments["start"]).to_numpy(dtype=float)
    total = seconds.sum()
    sources = _sources(segments)
    fused = segments[sources[FUSED]].to_numpy(dtype=object) if FUSED in sources else None
    rows = {}
    for source, column in sources.items():
        labels = segments[column].to_numpy(dtype=object)
        labelled = pd.notna(labels)
        row = {"coverage": seconds[labelled].sum() / total if total > 0 else np.nan, "agrees with fused": np.nan}
        if fused is not None and source != FUSED:
            both = labelled & pd.notna(fused)
            if seconds[both].sum() > 0:
                row["agrees with fused"] = seconds[both & (labels == fused)].sum() / seconds[both].sum()
        rows[source] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def conflicts(segments: pd.DataFrame) -> dict | None:
    """Segments whose pooled modalities disagree (the ``conflict`` column of
    :func:`multimodal_ser.fusion.fused_columns`), and segments with a static face.

    Returns:
        ``{"segments", "conflicting", "conflicting_s", "fused", "static_face"}`` (counts and seconds);
        None for a timeline written before these columns existed.
    """
    if "conflict" not in segments:
        return None
    seconds = (segments["end"] - segments["start"]).to_numpy(dtype=float)
    conflict = segments["conflict"].fillna(False).to_numpy(dtype=bool)
    static = segments["face_static"].fillna(False).to_numpy(dtype=bool) if "face_static" in segments else np.zeros(len(segments), bool)
    return {
        "segments": int(len(segments)),
        "fused": int(segments["label"].notna().sum()),
        "conflicting": int(conflict.sum()),
        "conflicting_s": float(seconds[conflict].sum()),
        "static_face": int(static.sum()),
    }


def markdown_summary(timeline: Timeline, name: str) -> str:
    """The two tables of one timeline as Markdown, under a heading with its name and fusion."""
    segments = timeline.segments
    fusion = timeline.metadata.get("fusion") or {}
    seconds = float((segments["end"] - segments["start"]).sum()) if len(segments) else 0.0
    weights = f", weights {fusion['weights']}" if "weights" in fusion else ""
    lines = [f"## {name}", "", f"{len(segments)} segments, {seconds:.1f} s; fusion: {fusion.get('fusion', 'none')}{weights}", ""]
    if not len(segments):
        return "\n".join(lines + ["(no segments)", ""])
    shares = label_shares(segments)
    lines += [
        "Share of each source's labelled time per emotion:",
        "",
        markdown_table(shares.to_dict(orient="index"), columns=list(shares.columns), index_name="emotion"),
        "",
        markdown_table(
            coverage_and_agreement(segments).to_dict(orient="index"), columns=["coverage", "agrees with fused"], index_name="source"
        ),
        "",
    ]
    counted = conflicts(segments)
    if counted is not None:
        lines += [
            f"Conflicting segments (two or more modalities that count, agreement < 0.75): {counted['conflicting']} of "
            f"{counted['fused']} fused ({counted['conflicting_s']:.1f} s). Segments with a static face (counted for little): "
            f"{counted['static_face']}.",
            "",
        ]
    return "\n".join(lines)
