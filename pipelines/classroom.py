"""Classroom and lecture recordings: attention and engagement per face over time and for the room.

Only the face branch's geometry runs (head pose, eye openness, gaze toward the camera); the
expression network is never run (``FaceAnalyzer(with_expression=False)``) and no emotion is inferred:
inferring the emotions of pupils and students in education institutions is prohibited in the EU
(AI Act art. 5(1)(f)). Faces are numbered tracks, never identified. The engagement score is a
heuristic attention proxy, not a validated measure (docs/engagement.md): use it for research on
consented recordings, never to judge or rank a person.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from multimodal_ser import __version__
from multimodal_ser.face import FaceAnalyzer
from multimodal_ser.files import sha256_file
from multimodal_ser.grid import make_grid
from multimodal_ser.media import probe
from multimodal_ser.timeline import WORD_COLUMNS, Timeline

from .conversation import summary_table

ATTENTION_COLUMNS = ("time", "face_id", "box_x", "box_y", "box_w", "box_h", "yaw", "pitch", "roll", "eye_openness", "gaze_on_camera", "engagement", "face_present")
"""The frames table of a classroom timeline: geometry and attention only, no expression column."""

GEOMETRY = "face geometry (head pose, gaze, eye openness); no expression"


def analyze_classroom(path: str | Path, *, fps: float = 2.0, bin_seconds: float = 60.0) -> Timeline:
    """The attention timeline of a classroom video.

    Returns:
        a Timeline whose frames hold :data:`ATTENTION_COLUMNS`, whose segments are the time bins
        of ``bin_seconds`` (no speech, no modality columns) and whose words table is empty.

    Raises:
        ValueError: ``bin_seconds`` or ``fps`` out of range. MediaError: bad input, naming the file.
    """
    if not bin_seconds > 0:
        raise ValueError(f"bin_seconds must be positive, not {bin_seconds}")
    info = probe(path)
    analyzer = FaceAnalyzer(fps=fps, with_expression=False)
    frames = analyzer.analyze(path)
    frames = frames[list(ATTENTION_COLUMNS)].reset_index(drop=True)
    starts = np.arange(0.0, max(info.duration, bin_seconds), bin_seconds)
    segments = make_grid(starts, np.minimum(starts + bin_seconds, max(info.duration, 0.0)))
    segments["speech"] = False
    metadata = {
        "package": "multimodal-ser",
        "version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "pipeline": "classroom",
        "source": {"file": info.path.name, "sha256": sha256_file(info.path), "duration": info.duration},
        "face": analyzer.config,
        "bin_seconds": bin_seconds,
        "inferred_from": {"engagement, gaze_on_camera, yaw, pitch, roll, eye_openness": GEOMETRY},
        "notes": ["the expression network was not run: no emotion is inferred (EU AI Act art. 5(1)(f))"],
    }
    words = pd.DataFrame({c: pd.Series(dtype=object) for c in WORD_COLUMNS})
    return Timeline(segments=segments, words=words, frames=frames, metadata=metadata)


def classroom_summary(frames: pd.DataFrame, *, bin_seconds: float = 60.0) -> pd.DataFrame:
    """The summary table (:data:`pipelines.conversation.SUMMARY_COLUMNS`) of a classroom timeline.

    Sections: ``face`` (per face track: ``seconds_seen``, ``engagement_mean``, ``looking_share`` =
    share of its frames with ``gaze_on_camera`` >= 0.5), ``face_bin`` (per face and bin:
    ``engagement_mean``), ``room`` (per bin: ``faces_seen``, ``engagement_mean`` over the faces).
    """
    faces = frames[frames["face_present"]].copy()
    times = np.sort(frames["time"].unique())
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    faces["bin_start"] = (faces["time"] // bin_seconds) * bin_seconds
    rows = []
    for face_id, own in faces.groupby("face_id"):
        subject = f"face {face_id}"
        for metric, value in (("seconds_seen", len(own) * step), ("engagement_mean", own["engagement"].mean()),
                              ("looking_share", float((own["gaze_on_camera"] >= 0.5).mean()))):
            rows.append({"section": "face", "subject": subject, "metric": metric, "value": value, "inferred_from": GEOMETRY})
        for start, part in own.groupby("bin_start"):
            rows.append({"section": "face_bin", "subject": subject, "metric": "engagement_mean", "value": part["engagement"].mean(),
                         "start": start, "end": start + bin_seconds, "inferred_from": GEOMETRY})
    for start, part in faces.groupby("bin_start"):
        per_face = part.groupby("face_id")["engagement"].mean()
        rows.append({"section": "room", "subject": "room", "metric": "faces_seen", "value": len(per_face), "start": start,
                     "end": start + bin_seconds, "inferred_from": GEOMETRY})
        rows.append({"section": "room", "subject": "room", "metric": "engagement_mean", "value": per_face.mean(), "start": start,
                     "end": start + bin_seconds, "inferred_from": GEOMETRY})
    return summary_table(rows)

