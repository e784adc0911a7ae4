"""Face expression networks averaged: their mixing weight chosen on FER2013 PublicTest, scored once on PrivateTest.

    .venv/bin/python benchmarks/face_ensemble.py --data ../shared/data \\
        --weights packaged --weights out/face_resnet/face_head.safetensors

Each network reads the crops as the package does (:meth:`ExpressionModel.predict`: mirror-averaged,
its own calibration temperature), and the ensemble is the weighted mean of their probabilities.
The weights are the point of a grid (step ``--step``) over the simplex with the best unweighted
accuracy on PublicTest (ties: the more even mix). PrivateTest is then scored once for each
network and the ensemble: accuracy (wa), UA and macro-F1 with 95% bootstrap intervals, recall per
class and ECE. The milliseconds per face of each network (one call of 64 crops and their
mirrors, one thread, best of 5) say what the ensemble costs: their sum.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from multimodal_ser.evaluation import metrics
from multimodal_ser.face.expression import ExpressionModel, ms_per_face, read_label_folder
from multimodal_ser.labels import EMOTIONS
from multimodal_ser.training.face import fer2013_root

logger = logging.getLogger("face_ensemble")


def simplex_grid(n_members: int, step: float) -> list[np.ndarray]:
    """Every weight vector of ``n_members`` non-negative multiples of ``step`` summing to 1."""
    units = round(1 / step)
    return [np.array(c) / units for c in itertools.product(range(units + 1), repeat=n_members) if sum(c) == units]


def choose_weights(members: Sequence[np.ndarray], truth: Sequence[str], step: float) -> tuple[np.ndarray, float]:
    """The grid weights whose mixture of ``members`` (each ``(n, len(EMOTIONS))``) has the best UA
    against ``truth`` (``n`` labels); ties go to the mix closest to even. Returns ``(weights, ua)``."""
    even = np.full(len(members), 1 / len(members))
    scored = []
    for weights in simplex_grid(len(members), step):
        predicted = [EMOTIONS[i] for i in sum(w * p for w, p in zip(weights, members, strict=True)).argmax(axis=1)]
        scored.append((metrics.ua(truth, predicted, labels=EMOTIONS), -float(np.abs(weights - even).sum()), tuple(weights)))
    ua, _, weights = max(scored)
    return np.array(weights), ua


def _score(p: np.ndarray, truth: Sequence[str], seed: int) -> dict:
    predicted = [EMOTIONS[i] for i in p.argmax(axis=1)]
    return metrics.summary(truth, predicted, labels=EMOTIONS, probabilities=p, seed=seed)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Face expression networks averaged, weights chosen on PublicTest, scored on PrivateTest.")
    parser.add_argument("--data", type=Path, required=True, help="folder holding fer2013/{val,test}")
    parser.add_argument("--weights", action="append", required=True,
                        help="'packaged' or a face head file; give it once per network (at least two)")
    parser.add_argument("--step", type=float, default=0.1, help="grid step of the mixing weights")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if len(args.weights) < 2:
        parser.error("give --weights at least twice")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = fer2013_root(args.data)
    models = [ExpressionModel(weights=None if w == "packaged" else w) for w in args.weights]
    splits = {}
    for split in ("val", "test"):
        images, truth = read_label_folder(root / split, size=48)
        splits[split] = (truth, [m.predict(images)[0] for m in models])
    weights, val_ua = choose_weights(splits["val"][1], splits["val"][0], args.step)
    test_truth, test_members = splits["test"]
    rows = {}
    for name, model, p in zip(args.weights, models, test_members, strict=True):
        rows[name] = {"ms_per_face": ms_per_face(model), **_score(p, test_truth, args.seed)}
    mixed = sum(w * p for w, p in zip(weights, test_members, strict=True))
    rows["ensemble"] = {"ms_per_face": sum(r["ms_per_face"] for r in rows.values()), "weights": weights.tolist(),
                        "publictest_ua": val_ua, **_score(mixed, test_truth, args.seed)}
    logger.info("weights %s chosen on PublicTest (UA %.4f); PrivateTest, %d images:", weights.round(3).tolist(), val_ua, len(test_truth))
    logger.info("%-50s %6s %16s %16s %16s %6s %8s", "network", "wa", "", "ua", "", "f1", "ms/face")
    for name, r in rows.items():
        logger.info("%-50s %.4f [%.3f, %.3f]  %.4f [%.3f, %.3f]  %.4f  ece %.3f  %.1f", name[-50:], r["wa"], *r["wa_ci"],
                    r["ua"], *r["ua_ci"], r["macro_f1"], r["ece"], r["ms_per_face"])
        logger.info("    recall %s", ", ".join(f"{label} {recall:.3f}" for label, recall in r["recall"].items()))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
