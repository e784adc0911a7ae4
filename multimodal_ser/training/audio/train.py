"""Training the shipped voice head on every corpus (``mser train audio``) and writing its model card."""

from __future__ import annotations

import dataclasses
import logging
import os
import string
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ... import voice
from ...evaluation import metrics
from ...files import sha256_file
from ...labels import EMOTIONS, RAVDESS_8
from .. import install
from . import corpus as packing
from .conditions import CLEAN
from .corpus import CORPORA, corpus_folders
from .crossval import Data
from .head import RECIPE, HeadRecipe, head_config, predict_head

log = logging.getLogger(__name__)

CARD_TEMPLATE = Path(__file__).with_name("card.md")
"""The model card's prose, with ``$name`` fields filled from the training summary and the reports."""

REFERENCE_TEXT = {
    "none": """
**Reference: none.** The head reads these features as computed, one recording at a time, as `mser analyze`
sees it. A second packaged head, `audio_head_collection.safetensors`, reads them against the mean of
their collection (its own card; README, Voice reference).
""",
    "collection": """
**Reference: the collection.** The head reads each segment's features less the mean of the
collection it belongs to (`multimodal_ser.voice.centre_by_collection`): in training, each corpus's
clips less that corpus's mean, each version (clean, isolated, telephone) apart; in the evaluations
below, the held-out clips of a corpus less their own mean, taken over the held-out clips only; in use,
`mser evaluate --voice-reference collection` removes the mean over the manifest's items (at least
30), and `mser analyze|batch --voice-reference FILE` the mean saved by `mser voice-reference`. What a
collection shares (language, channel, recording set-up, speaking style) is removed, and with it the
collection's average emotion: a collection mostly of one emotion is read against that emotion
(README, Voice reference, measures it). Without a reference, `mser analyze` uses `audio_head.safetensors`.
""",
}
"""The card's paragraph on what the head reads features against, per :attr:`.head.HeadRecipe.reference`."""


def train_audio_head(
    data_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    corpora: Sequence[str] | None = None,
    seed: int = 0,
    recipe: HeadRecipe = RECIPE,
    cv_report: dict | None = None,
    loco_report: dict | None = None,
    card_path: str | os.PathLike | None = None,
    data: Data | None = None,
) -> dict:
    """Train the voice head on every clip of ``corpora`` under ``data_dir`` and save it.

    Args:
        data_dir: the data folder holding the corpora's folders (:data:`.corpus.CORPORA`); ``corpora``
            names those to use (None: every one found).
        out_path: the safetensors file to write; inside the package's ``models/`` folder its sha256
            is also recorded in ``SHA256SUMS``.
        cv_report: a :func:`.crossval.cross_validate_audio` result: its temperature calibrates the
            head (without it the head is stored uncalibrated), and the card quotes it.
        loco_report: a :func:`.crossval.leave_one_corpus_out` result for the card.
        card_path: where to write the model card (Markdown), if anywhere.
        data: the clips and features already loaded (:meth:`.crossval.Data.load`, e.g. for the
            evaluations just run); then ``data_dir`` and ``corpora`` are not read again.

    Returns:
        ``path``, ``sha256``, ``n_clips`` per corpus, ``speakers``, ``seed``, ``recipe``,
        ``temperature``, ``training_ua`` (on the training clips: not an estimate of anything),
        ``layer_weights``, ``size_bytes``, ``runtime_seconds``.
    """
    started = time.perf_counter()
    out_path = Path(out_path)
    if data is None:
        data = Data.load(corpus_folders(data_dir, corpora), recipe=recipe, seed=seed, tested=(CLEAN.name,))
    corpora = list(dict.fromkeys(data.manifest["corpus"]))
    everything = np.ones(len(data.manifest), dtype=bool)
    log.info("training the voice head on %d clips of %s (augmentation %s)", len(data.manifest), list(corpora), list(recipe.augment))
    head = data.fit(everything, recipe=recipe, seed=seed)
    predicted = predict_head(head, data.referenced(CLEAN.name, everything, recipe=recipe)).argmax(axis=1)
    training_ua = metrics.ua(data.targets.argmax(axis=1), predicted, labels=list(range(len(RAVDESS_8))))
    speakers = sorted(data.manifest["speaker"].unique())
    counts = data.manifest["corpus"].value_counts().to_dict()
    config = head_config(
        recipe,
        data="; ".join(f"{CORPORA[c].licence}: {counts[c]} clips" for c in corpora),
        speakers=speakers,
        seed=seed,
    )
    config["training"]["packing"] = {
        "trim_top_db": packing.TRIM_TOP_DB, "context_s": packing.CONTEXT_SECONDS, "segment_pad_s": packing.SEGMENT_PAD_SECONDS,
        "gap_s": packing.GAP_SECONDS, "isolated_share": packing.ISOLATED_SHARE,
    }
    temperature = None if cv_report is None else float(cv_report["temperature"])
    if temperature is not None:
        config["calibration"] = {
            "temperature": temperature,
            "prior": cv_report["prior"],
            "fitted_on": "speaker-disjoint cross-validation over "
            f"{', '.join(cv_report['corpora'])}: pooled held-out clean, isolated and telephone predictions",
        }
    sha256 = install.install_head(out_path, head.state_dict(), config) or sha256_file(out_path)
    info = {
        "path": str(out_path),
        "sha256": sha256,
        "n_clips": {c: int(counts[c]) for c in corpora},
        "speakers": len(speakers),
        "seed": seed,
        "recipe": dataclasses.asdict(recipe),
        "temperature": temperature,
        "training_ua": training_ua,
        "layer_weights": [round(float(w), 4) for w in head.layer_weights().detach()],
        "size_bytes": out_path.stat().st_size,
        "runtime_seconds": time.perf_counter() - started,
    }
    log.info("voice head written to %s (sha256 %s, %.1f MB)", out_path, sha256, info["size_bytes"] / 1e6)
    if card_path is not None:
        write_model_card(Path(card_path), training=info, cv_report=cv_report, loco_report=loco_report, corpora=corpora)
    return info


def write_model_card(path: Path, *, training: dict, corpora: Sequence[str], cv_report: dict | None = None,
                     loco_report: dict | None = None) -> Path:
    """Fill :data:`CARD_TEMPLATE` from a training summary and the evaluation reports, and write it."""
    recipe = training["recipe"]
    circumplex = "\n".join(f"| {name} | {v:+.3f} | {a:+.3f} |" for name, (v, a) in voice.CIRCUMPLEX.items())
    not_run = "Not run for this file: `mser crossval` and `mser crossval --leave-out-corpus` produce it."
    collection = recipe["reference"] == "collection"
    fields = {
        "file_name": voice.packaged_head_path(recipe["reference"]).name,
        "reference_option": " --voice-reference collection" if collection else "",
        "reference_text": REFERENCE_TEXT[recipe["reference"]].strip(),
        "size_mb": f"{training['size_bytes'] / 1e6:.1f}",
        "sha256": training["sha256"],
        "seed": training["seed"],
        "recipe_name": voice.FEATURE_RECIPE,
        "n_prosody": len(voice.PROSODY_FEATURES),
        "min_segment": voice.MIN_SEGMENT_SECONDS,
        "l2": recipe["l2"], "hidden": recipe["hidden"], "dropout": recipe["dropout"], "input_dropout": recipe["input_dropout"],
        "epochs": recipe["epochs"], "label_smoothing": recipe["label_smoothing"],
        "augment": ", ".join(recipe["augment"]) or "none",
        "layer_weights": training["layer_weights"],
        "licences": "\n".join(f"- **{c}**: {CORPORA[c].licence}; {training['n_clips'][c]} clips." for c in corpora),
        "n_clips": sum(training["n_clips"].values()),
        "n_speakers": training["speakers"],
        "isolated_share": ", ".join(f"{c} {packing.ISOLATED_SHARE.get(c, 1.0):g}" for c in corpora),
        "trim_top_db": f"{packing.TRIM_TOP_DB:g}", "segment_pad": packing.SEGMENT_PAD_SECONDS, "gap": packing.GAP_SECONDS,
        "training_ua": f"{training['training_ua']:.3f}",
        "temperature": "none (uncalibrated)" if training["temperature"] is None else f"{training['temperature']:.3f}",
        "classes8": list(RAVDESS_8), "classes7": list(EMOTIONS),
        "circumplex": circumplex,
        "cv": not_run if cv_report is None else f"`mser crossval` ({cv_report['runtime_seconds'] / 60:.0f} min):\n\n" + cv_report["markdown"],
        "loco": not_run if loco_report is None else (
            f"`mser crossval --leave-out-corpus` ({loco_report['runtime_seconds'] / 60:.0f} min):\n\n" + loco_report["markdown"]
        ),
    }
    text = string.Template(CARD_TEMPLATE.read_text(encoding="utf-8")).substitute(fields)
    return install.write_card(path, text)
