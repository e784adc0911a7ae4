"""The voice read against its collection when the collection's emotions are not balanced.

A head with reference ``collection`` reads every clip less the mean of its collection, so the
collection's average emotion becomes its ground. Corpora are balanced by design; a user's calls or
interviews are not. Here each corpus is left out in turn (heads trained on the others, the recipe
of ``mser crossval --leave-out-corpus``, clean clips), and collections are drawn from it: balanced
(the same number of clips of each of its labels), and "mostly L" for each label L (70 % of the
clips L, the rest shared by the others). Each collection is read by the plain head (reference
``none``) and by the collection head against that collection's own mean. Printed per collection:
UA over the corpus's own labels and the angry false-alarm rate, each the mean over ``--draws``
seeded draws. Then how small a collection may be: random draws of :data:`SIZES` clips of the corpus
(their labels as chance mixes them), each read against its own mean by the collection head (UA over
the clips of all draws).

    python benchmarks/voice_collection_mix.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from multimodal_ser import voice
from multimodal_ser.labels import EMOTIONS
from multimodal_ser.training.audio.conditions import CLEAN
from multimodal_ser.training.audio.corpus import corpus_folders
from multimodal_ser.training.audio.crossval import Data, _truth7, score_corpus
from multimodal_ser.training.audio.head import RECIPE, predict_head

MAJORITY = 0.7
"""Share of a "mostly L" collection that is L."""

SIZES = (8, 16, 30, 60, 120)
"""Clips in the random collections of the size table."""


def collections(truth: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``{name: clip indices}``: one balanced draw and one "mostly L" draw per label of the rows ``rows``."""
    labels = sorted(set(truth[rows]), key=EMOTIONS.index)
    by_label = {c: np.flatnonzero(rows & (truth == c)) for c in labels}
    n = min(len(v) for v in by_label.values())
    other = max(1, round(n * (1 - MAJORITY) / MAJORITY / (len(labels) - 1)))
    out = {"balanced": np.concatenate([rng.choice(v, n, replace=False) for v in by_label.values()])}
    for major in labels:
        out[f"mostly {major}"] = np.concatenate([rng.choice(by_label[c], n if c == major else other, replace=False) for c in labels])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=5)
    args = parser.parse_args()
    data = Data.load(corpus_folders(args.data, None), recipe=RECIPE, seed=args.seed, tested=(CLEAN.name,))
    corpus = data.manifest["corpus"].to_numpy()
    truth = _truth7(data.manifest)
    speakers = data.manifest["speaker"].to_numpy()
    x = data.features[CLEAN.name]
    recipes = {reference: dataclasses.replace(RECIPE, reference=reference) for reference in ("none", "collection")}
    sized: dict[str, dict[int, float]] = {}
    print("| held-out corpus | collection | UA, none | angry FA, none | UA, collection | angry FA, collection |")
    print("|---|---|---|---|---|---|")
    for held in dict.fromkeys(corpus):
        rows = corpus == held
        heads = {reference: data.fit(~rows, recipe=recipe, seed=args.seed) for reference, recipe in recipes.items()}

        def read(picked: np.ndarray, reference: str) -> dict:
            """:func:`score_corpus` of the clips ``picked`` read as one collection by the head of ``reference``."""
            features = x[picked] if reference == "none" else voice.centre_by_collection(x[picked], [held] * len(picked))
            p7 = predict_head(heads[reference], features) @ voice.SHARED_SPACE
            return score_corpus(p7, truth[picked], groups=speakers[picked], n_resamples=1, seed=args.seed)

        rng = np.random.default_rng(args.seed)
        scores: dict[str, dict[str, list]] = {}
        for _ in range(args.draws):
            for name, picked in collections(truth, rows, rng).items():
                for reference in heads:
                    score = read(picked, reference)
                    scores.setdefault(name, {}).setdefault(reference, []).append((score["closed"]["ua"], score["angry_false_alarm"]))
        for name, by_reference in scores.items():
            cells = [f"{np.mean([s[k] for s in by_reference[r]]):.3f}" for r in ("none", "collection") for k in (0, 1)]
            print(f"| {held} | {name} | " + " | ".join(cells) + " |", flush=True)
        # each draw read against its own mean, scored over the clips of all draws
        sized[held] = {}
        for size in SIZES:
            draws = [rng.choice(np.flatnonzero(rows), size, replace=False) for _ in range(args.draws * 4)]
            p7 = np.concatenate([predict_head(heads["collection"], voice.centre_by_collection(x[d], [held] * size)) for d in draws]) @ voice.SHARED_SPACE
            pooled = np.concatenate(draws)
            sized[held][size] = score_corpus(p7, truth[pooled], groups=speakers[pooled], n_resamples=1, seed=args.seed)["closed"]["ua"]
    print("\nCollection head, random collections of n clips, each read against its own mean (UA over all draws):\n")
    print("| held-out corpus | " + " | ".join(f"n = {n}" for n in SIZES) + " |")
    print("|---|" + "---|" * len(SIZES))
    for held, by_size in sized.items():
        print(f"| {held} | " + " | ".join(f"{by_size[n]:.3f}" for n in SIZES) + " |")


if __name__ == "__main__":
    main()
