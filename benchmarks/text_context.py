"""Does dialogue context help the text head? Heads with and without it, on the training protocol.

    .venv/bin/python benchmarks/text_context.py --data ../shared/data

Each head is an MLP on the frozen embeddings of the packaged head's encoder (fine-tuned, for a
fine-tuned packaged head), trained as ``mser train text --encoder e5`` trains one (GoEmotions train +
MELD train less the validation dialogues, the packaged head's selected rows and weights, seed 0); the
context form (:func:`multimodal_ser.text.dialogue_context`: turns, decay) is chosen on the
validation score alone. Then, once, the head without context and the chosen one are scored on
the held-out sets: MELD dev (emotion and sentiment weighted-F1, each utterance read with the
dev dialogue's earlier utterances) and GoEmotions test (emotion macro-F1; no context there),
with 95% bootstrap intervals (MELD: whole dialogues resampled) and the paired difference.
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from multimodal_ser.evaluation import metrics
from multimodal_ser.labels import EMOTIONS, SENTIMENTS
from multimodal_ser.text import TextEmotionModel, head_features
from multimodal_ser.training.text import (
    embed_cached,
    fit_head,
    load_dair,
    load_goemotions,
    load_meld,
    meld_validation_dialogues,
    predict,
    stack,
)

logger = logging.getLogger("text_context")

CONTEXT_FORMS = ({"turns": 2, "decay": 0.7}, {"turns": 5, "decay": 0.7}, {"turns": 8, "decay": 1.0})
"""The context forms tried; the validation score picks one."""


SCORES = (
    ("meld", EMOTIONS, metrics.weighted_f1),
    ("sentiment", SENTIMENTS, metrics.weighted_f1),
    ("goemotions", EMOTIONS, metrics.macro_f1),
)
"""(held-out score, labels, metric), in the table's column order."""


def _with_interval(truth: np.ndarray, pred: np.ndarray, labels, metric, groups) -> str:
    """``value [low, high]`` of ``metric`` on label indices ``(n,)``, 95% bootstrap interval."""
    t, p = [labels[i] for i in truth], [labels[i] for i in pred]
    low, high = metrics.bootstrap_interval(t, p, metric, labels=labels, groups=groups)
    return f"{metric(t, p, labels=labels):.3f} [{low:.3f}, {high:.3f}]"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Text head with and without dialogue context, on held-out data.")
    parser.add_argument("--data", type=Path, required=True, help="folder with goemotions/, meld/, dair-emotion/")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    packaged = TextEmotionModel(calibrated=False)
    hp, encoder = packaged.head_config["training"]["selected"], packaged.encoder
    sets = {
        "goemotions/train": load_goemotions(args.data, "train"),
        "goemotions/dev": load_goemotions(args.data, "dev"),
        "goemotions/test": load_goemotions(args.data, "test"),
        "meld/train": load_meld(args.data, "train"),
        "meld/dev": load_meld(args.data, "dev"),
    }
    if hp["use_dair"]:
        sets["dair/train"] = load_dair(args.data, "train")
    emb = {name: embed_cached(encoder, s.texts, name=name)[0] for name, s in sets.items()}
    meld = sets["meld/train"]
    in_val = np.isin(meld.groups, meld_validation_dialogues(meld.groups, seed=args.seed))
    fit, val = meld.subset(~in_val, "meld/train-fit"), meld.subset(in_val, "meld/train-val")

    def features(name: str, context: dict | None, rows: np.ndarray | None = None) -> np.ndarray:
        s = sets[name]
        x = head_features(emb[name], s.groups, context)  # context never crosses a dialogue
        return x if rows is None else x[rows]

    heads = {}
    for context in (None, *CONTEXT_FORMS):
        parts = [(sets["goemotions/train"], features("goemotions/train", context), 1.0),
                 (fit, features("meld/train", context, ~in_val), hp["meld_weight"])]
        if hp["use_dair"]:
            parts.append((sets["dair/train"], features("dair/train", context), 1.0))
        train = stack(parts)
        train.weight /= train.weight.mean()
        validation = {
            "goemotions": (sets["goemotions/dev"], torch.from_numpy(features("goemotions/dev", context))),
            "meld": (val, torch.from_numpy(features("meld/train", context, in_val))),
        }
        head, result = fit_head(train, validation, alpha=hp["alpha"], seed=args.seed)
        logger.info("context %s: validation %s", context, result)
        heads[None if context is None else tuple(context.items())] = (context, head, result)
    best = max((v for k, v in heads.items() if k is not None), key=lambda v: v[2]["score"])
    chosen = {"none": heads[None], f"context {best[0]}": best}

    dev, test = sets["meld/dev"], sets["goemotions/test"]
    single = test.single_label
    truth = {"meld": dev.emotion.argmax(1), "sentiment": dev.sentiment, "goemotions": test.emotion[single].argmax(1)}
    groups = {"meld": dev.groups, "sentiment": dev.groups, "goemotions": None}
    preds = {}
    print("| head | validation score | MELD dev emotion weighted-F1 | MELD dev sentiment weighted-F1 | GoEmotions test macro-F1 |")
    print("|---|---|---|---|---|")
    for name, (context, head, result) in chosen.items():
        emotion, sentiment = predict(head, torch.from_numpy(features("meld/dev", context)))
        ge, _ = predict(head, torch.from_numpy(features("goemotions/test", context)))
        preds[name] = {"meld": emotion, "sentiment": sentiment, "goemotions": ge[single]}
        cells = [_with_interval(truth[k], preds[name][k], labels, metric, groups[k]) for k, labels, metric in SCORES]
        print(f"| {name} | {result['score']:.3f} | {' | '.join(cells)} |")
    a, b = preds[f"context {best[0]}"], preds["none"]
    cells = []
    for k, labels, metric in SCORES:
        t = [labels[i] for i in truth[k]]
        diff, (low, high) = metrics.paired_difference(
            t, [labels[i] for i in a[k]], [labels[i] for i in b[k]], labels=labels, groups=groups[k], metric=metric
        )
        cells.append(f"{diff:+.3f} [{low:+.3f}, {high:+.3f}]")
    print(f"| context − none (paired) | | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
