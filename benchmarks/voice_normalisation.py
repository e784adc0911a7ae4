"""Per-speaker and per-collection standardisation of the voice features, measured leave one corpus out.

Each speaker's segment features are standardised by that speaker's own mean (and standard
deviation) over all their clips, in training and in test, before the head's own standardisation;
or each corpus's by the corpus's own (a collection recorded one way: one call centre's calls, one
study's interviews; no labels are read, only the features of the collection itself);
then every corpus is scored by a head trained on the others only (the recipe of ``mser crossval
--leave-out-corpus``, same seeds, clean condition). Printed per held-out corpus: UA over its own
classes and the angry false-alarm rate, with and without; and how much each corpus's speakers keep
to one emotion (the share of a speaker's clips in their most frequent label, averaged over
speakers), which decides whether a speaker's mean is neutral ground or their emotion.

Then the same with 5 speaker-disjoint folds over all corpora: what a standardisation costs or
gains on speakers of corpora the head was trained on.

    python benchmarks/voice_normalisation.py --data ../shared/data
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from multimodal_ser import voice
from multimodal_ser.training.audio.conditions import CLEAN
from multimodal_ser.training.audio.corpus import corpus_folders
from multimodal_ser.training.audio.crossval import Data, _held_out, _truth7, score_corpus, speaker_folds
from multimodal_ser.training.audio.head import RECIPE


def per_speaker(features: np.ndarray, speakers: np.ndarray, *, scale: bool) -> np.ndarray:
    """``features`` ``(n, d)`` with each speaker's mean removed (:func:`multimodal_ser.voice.centre_by_collection`),
    and divided by their std when ``scale``; all-NaN rows (clips a condition did not encode) stay NaN.
    ``speakers`` ``(n,)`` may name any grouping (corpora, for the per-collection rows)."""
    out = voice.centre_by_collection(features, speakers)
    if scale:
        encoded = ~np.isnan(features).all(axis=1)
        for speaker in np.unique(speakers[encoded]):
            rows = np.flatnonzero((speakers == speaker) & encoded)
            std = np.nan_to_num(np.nanstd(features[rows], axis=0))
            out[rows] /= np.where(std > 1e-6, std, 1.0)
    return out


def scores(data: Data, corpus: np.ndarray, seed: int, tests: list[np.ndarray] | None = None) -> dict[str, tuple[float, float]]:
    """``{corpus: (UA over its own classes, angry false-alarm rate)}`` of the clean clips, each test
    set ``(n,)`` bool scored by a head trained on the rest; default: each corpus held out in turn."""
    corpora = list(dict.fromkeys(corpus))
    tests = [corpus == c for c in corpora] if tests is None else tests
    head_p, _ = _held_out(data, tests, recipe=RECIPE, seed=seed, tested=[CLEAN.name], desc="held-out sets")
    p7 = head_p[CLEAN.name] @ voice.SHARED_SPACE
    truth = _truth7(data.manifest)
    groups = data.manifest["speaker"].to_numpy()
    out = {}
    for c in corpora:
        rows = corpus == c
        score = score_corpus(p7[rows], truth[rows], groups=groups[rows], n_resamples=1, seed=seed)
        out[c] = (score["closed"]["ua"], score["angry_false_alarm"])
    return out


def _table(results: dict[str, dict[str, tuple[float, float]]], first: str, extra: tuple[str, dict[str, str]] | None = None) -> str:
    """Markdown: a row per corpus (``first`` names the column), then the column ``extra`` =
    ``(header, {corpus: cell})`` if given, then UA and angry false-alarm rate of every standardisation in ``results``."""
    corpora = list(next(iter(results.values())))
    head = [first] + ([extra[0]] if extra else []) + [
        f"{measure}, {n}" for n in results for measure in ("UA", "angry FA")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in corpora:
        cells = [c] + ([extra[1][c]] if extra else []) + [f"{results[n][c][k]:.3f}" for n in results for k in (0, 1)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = Data.load(corpus_folders(args.data, None), recipe=RECIPE, seed=args.seed)
    corpus = data.manifest["corpus"].to_numpy()
    speakers = data.manifest["speaker"].to_numpy()
    purity = data.manifest.groupby("speaker").agg(corpus=("corpus", "first"), purity=("label8", lambda s: s.value_counts(normalize=True).iloc[0]))
    variants = {"none": data}
    for name, groups, scale in (("speaker mean removed", speakers, False), ("speaker mean and std", speakers, True),
                                ("collection mean removed", corpus, False), ("collection mean and std", corpus, True)):
        variants[name] = dataclasses.replace(data, features={k: per_speaker(v, groups, scale=scale) for k, v in data.features.items()})

    results = {name: scores(d, corpus, args.seed) for name, d in variants.items()}
    share = {c: f"{purity.loc[purity['corpus'] == c, 'purity'].mean():.2f}" for c in dict.fromkeys(corpus)}
    print("\nLeave one corpus out (UA over the corpus's own classes, angry false-alarm rate):\n")
    print(_table(results, "held-out corpus", ("speakers' share of their most frequent label", share)))

    # the mean-only standardisations on speakers of the training corpora: 5 speaker-disjoint folds
    tests = [np.isin(speakers, fold) for fold in speaker_folds(data.manifest, folds=5, seed=args.seed)]
    disjoint = {name: scores(variants[name], corpus, args.seed, tests)
                for name in ("none", "speaker mean removed", "collection mean removed")}
    print("\nSpeaker-disjoint, 5 folds over all corpora (the head has heard other speakers of the test corpus):\n")
    print(_table(disjoint, "test corpus"))

if __name__ == "__main__":
    main()
