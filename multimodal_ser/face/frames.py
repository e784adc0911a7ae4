"""The frames table: one row per face per sampled frame, always with all of :data:`FRAME_COLUMNS`.

A sampled frame without a face is one row with ``face_present=False``, ``face_id=-1`` and nulls.
The per-face time series ``blink`` and ``engagement`` (definitions in ``docs/engagement.md``) are
filled here from the per-frame geometry of :mod:`multimodal_ser.face.geometry`; the ``shape_*``
columns are the mesh's expression shape (:mod:`multimodal_ser.face.shape`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..labels import EMOTIONS
from .shape import SHAPE_FEATURES

ENGAGEMENT_WEIGHTS = {"gaze_on_camera": 0.4, "head_facing": 0.4, "eyes_open": 0.2}
"""Weights of the per-frame engagement terms (they sum to 1); see docs/engagement.md."""

PROB_COLUMNS = [f"face_{label}" for label in EMOTIONS]
"""The expression probability columns, ``face_<label>`` in EMOTIONS order."""

SHAPE_COLUMNS = [f"shape_{name}" for name in SHAPE_FEATURES]
"""The expression shape columns, ``shape_<name>`` in :data:`~multimodal_ser.face.shape.SHAPE_FEATURES` order."""

FRAME_COLUMNS: tuple[str, ...] = (
    "time",
    "face_id",
    "box_x",
    "box_y",
    "box_w",
    "box_h",
    "face_label",
    "face_confidence",
    *PROB_COLUMNS,
    "yaw",
    "pitch",
    "roll",
    "eye_openness",
    "blink",
    "gaze_on_camera",
    "mouth_openness",
    "engagement",
    *SHAPE_COLUMNS,
    "face_present",
    "face_embedding",
)
"""Columns of the frames table, in order."""


def _typed_table(rows: list[dict]) -> pd.DataFrame:
    """The rows as a table of FRAME_COLUMNS plus the working column ``head_facing``, with their dtypes."""
    table = pd.DataFrame(rows, columns=[*FRAME_COLUMNS, "head_facing"])
    floats = ["time", "box_x", "box_y", "box_w", "box_h", "face_confidence", *PROB_COLUMNS, "yaw", "pitch",
              "roll", "eye_openness", "gaze_on_camera", "mouth_openness", "engagement", *SHAPE_COLUMNS, "head_facing"]
    table[floats] = table[floats].astype(np.float64)
    table["face_id"] = table["face_id"].astype(np.int64)
    table["face_present"] = table["face_present"].astype(bool)
    for column in ("face_label", "face_embedding"):  # None, not NaN, where absent
        table[column] = pd.Series([None if isinstance(v, float) or not p else v for v, p in zip(table[column], table["face_present"])], dtype=object)
    table["blink"] = pd.array([pd.NA] * len(table), dtype="boolean")
    return table


def _add_time_series(table: pd.DataFrame, *, blink_ratio: float, window_s: float) -> pd.DataFrame:
    """Fill the per-face time-series columns ``blink`` and ``engagement``; drop internal columns.

    Per face id: eyes count as closed (``blink``) where eye openness < ``blink_ratio`` x the
    face's median eye openness; the per-frame engagement term is
    ``sum(ENGAGEMENT_WEIGHTS[k] * term_k)`` with ``eyes_open = clip(openness / median, 0, 1)``,
    smoothed by a centred moving average over ``window_s`` seconds of that face's frames
    (null where the frame's own term is null, i.e. the face has no mesh there).
    """
    present = table["face_present"].to_numpy()
    for index in table[present].groupby("face_id").groups.values():
        face = table.loc[index]
        openness = face["eye_openness"]
        median = openness.median(skipna=True)
        if not (np.isfinite(median) and median > 0):
            continue
        blink = pd.array(openness < blink_ratio * median, dtype="boolean")
        blink[openness.isna().to_numpy()] = pd.NA
        table.loc[index, "blink"] = blink
        eyes_open = (openness / median).clip(0.0, 1.0)
        w = ENGAGEMENT_WEIGHTS
        raw = w["gaze_on_camera"] * face["gaze_on_camera"] + w["head_facing"] * face["head_facing"] + w["eyes_open"] * eyes_open
        if window_s > 0:
            series = pd.Series(raw.to_numpy(), index=pd.to_timedelta(face["time"].to_numpy(), unit="s"))
            smoothed = series.rolling(pd.Timedelta(seconds=window_s), center=True, min_periods=1).mean().to_numpy()
            raw = pd.Series(np.where(raw.notna(), smoothed, np.nan), index=raw.index)
        table.loc[index, "engagement"] = raw.clip(0.0, 1.0)
    return table.drop(columns="head_facing")


def frames_table(rows: list[dict], *, blink_ratio: float, window_s: float) -> pd.DataFrame:
    """The frames table of a recording from its rows (dicts with some of :data:`FRAME_COLUMNS` and
    ``head_facing``), with ``blink`` and ``engagement`` filled per face (see :func:`_add_time_series`).

    Args:
        rows: one dict per face per sampled frame; missing keys become nulls.
        blink_ratio: eyes count as closed below this fraction of the face's median eye openness; (0, 1).
        window_s: length of the centred moving average smoothing engagement, seconds (0: none).
    """
    return _add_time_series(_typed_table(rows), blink_ratio=blink_ratio, window_s=window_s)


def still_frames_table(rows: list[dict]) -> pd.DataFrame:
    """The frames table of one still image: as :func:`frames_table`, but ``blink`` and ``engagement``,
    which need a time series, stay null."""
    return _typed_table(rows).drop(columns="head_facing")
