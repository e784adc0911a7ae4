"""Classroom and lecture recordings: attention signals per face over time, no emotion.

Runs only the face branch's geometry (head pose, eye openness, gaze toward the camera) and
summarises each tracked face's engagement score per time bin. The expression network is not
run at all (``FaceAnalyzer(with_expression=False)``): inferring the emotions of pupils and
students in education institutions is prohibited in the EU (AI Act art. 5(1)(f)). The engagement score is a heuristic
attention proxy, not a validated measure (see docs/engagement.md): use it for research on
consented recordings, never to judge or rank a person.

    python -m pipelines.classroom lecture.mp4 --out out/lecture [--fps 2] [--bin 60]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import pandas as pd

from multimodal_ser.errors import MserError
from multimodal_ser.face import FaceAnalyzer
from multimodal_ser.files import atomic_output

log = logging.getLogger("pipelines.classroom")

ATTENTION_COLUMNS = ("time", "face_id", "box_x", "box_y", "box_w", "box_h", "yaw", "pitch", "roll", "eye_openness", "gaze_on_camera", "engagement", "face_present")


def engagement_timeline(path: Path, *, fps: float = 2.0, bin_seconds: float = 60.0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-frame attention signals (no expression) and per-face, per-bin summaries.

    Returns:
        ``(frames, bins)``: ``bins`` has ``face_id``, ``bin_start`` (s), ``frames_seen``,
        ``engagement_mean``, ``gaze_on_camera_mean``, ``looking_share`` (share of that face's
        frames with ``gaze_on_camera`` >= 0.5).
    """
    if bin_seconds <= 0:
        raise ValueError(f"bin_seconds must be positive, not {bin_seconds}")
    frames = FaceAnalyzer(fps=fps, with_expression=False).analyze(path)
    frames = frames[[c for c in ATTENTION_COLUMNS if c in frames]]
    faces = frames[frames["face_present"]].copy()
    faces["bin_start"] = (faces["time"] // bin_seconds) * bin_seconds
    bins = (
        faces.groupby(["face_id", "bin_start"])
        .agg(
            frames_seen=("time", "size"),
            engagement_mean=("engagement", "mean"),
            gaze_on_camera_mean=("gaze_on_camera", "mean"),
            looking_share=("gaze_on_camera", lambda g: float((g >= 0.5).mean())),
        )
        .reset_index()
    )
    return frames.reset_index(drop=True), bins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--fps", type=float, default=2.0, help="frames analysed per second (default 2)")
    parser.add_argument("--bin", type=float, default=60.0, help="summary bin in seconds (default 60)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        frames, bins = engagement_timeline(args.video, fps=args.fps, bin_seconds=args.bin)
    except (MserError, ValueError) as e:
        print(f"classroom: {e}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    for name, table in (("attention_frames", frames), ("engagement_bins", bins)):
        with atomic_output(args.out / f"{name}.parquet") as tmp:
            table.to_parquet(tmp, index=False)
    print(json.dumps({"faces": int(bins["face_id"].nunique()), "bins": len(bins), "mean_engagement": round(float(bins["engagement_mean"].mean()), 3)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
