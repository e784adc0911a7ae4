"""Attention fusion trained on a labelled manifest (``mser train fusion --manifest CSV``), with its card.

:func:`train_fusion` runs every branch once per item (:func:`multimodal_ser.evaluation.predict_manifest`,
cached), measures late and attention fusion by group cross-fitting (the numbers in the model card),
then trains the attention fusion on all groups but a validation part (early stopping and temperature
scaling) and stacks late-fusion weights on all items. Each source of a mixed manifest contributes the
modalities it has: an audio file its voice (and its ASR transcript, or its ``text``), an image its
face, a row whose media file does not exist its ``text`` alone.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ... import __version__
from ...evaluation import Predictions, compare_predictions, group_folds, predict_manifest
from ...evaluation.metrics import markdown_confusion, markdown_table
from ...fusion import AttentionOptions, fit_attention_fusion, presence_patterns
from ...heads import MODELS_DIR, record_if_packaged
from ...labels import EMOTIONS, MODALITIES
from ..install import card_beside, write_card

log = logging.getLogger(__name__)

DEFAULT_OUT = MODELS_DIR / "attention_fusion.safetensors"

VALIDATION_FRACTION_FOLDS = 5
"""The final module holds out one fold in this many (by group) for early stopping and temperature."""


PACKAGED_NOTES = """\
What the packaged module could and could not learn from this data:

- **RAVDESS** (voice + ASR transcript): the words are one of two neutral sentences whatever the
  emotion, so on these items the words carry no emotion. They are the only items where voice and
  words occur together, so this is where the module learns how far to trust the words against the
  voice, and it learns to discount them. It has never seen speech whose words carry emotion
  together with a voice: on such speech it may under-weight the words. Where the words matter
  (calls, interviews with transcripts), use late fusion (`--fusion late`, whose words' weight is
  learned where the words are informative), or train this module on your own labelled data with
  `mser train fusion --manifest CSV`.
- **MELD dev** (words only, TV dialogue, mostly neutral): how to read the text branch alone.
- **FER2013 PrivateTest** (face only, 48x48 crops, no subject ids, so each image is its own group):
  how to read the face branch alone. The module never saw a face together with a voice or words.
- The voice predictions it learned from come from voice heads trained without the item's actor
  (cross-fitted by actor, 5 folds); in use it reads the packaged voice head, which heard all 20
  actors. It reads the voice's probabilities, not its embedding (each head's embedding space is its
  own).
- Licences of the training data: RAVDESS CC BY-NC-SA 4.0, MELD GPL-3.0, FER2013 research use.

Reproduce: `multimodal_ser.training.fusion.train_packaged_fusion("../shared/data")`
(`mser train fusion --data ../shared/data --out multimodal_ser/models`); the manifest and the cross-fitted voice heads are
rebuilt from the data, the branch outputs are cached.
"""
"""The "Limits" notes of the packaged module's card (see :func:`packaged_training_manifest`)."""


def _label_counts(labels: Sequence[str]) -> dict[str, int]:
    values, counts = np.unique(np.asarray(labels, dtype=object), return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts)}


def train_fusion(
    manifest: str | os.PathLike,
    out_path: str | os.PathLike = DEFAULT_OUT,
    *,
    seed: int = 0,
    modalities: Sequence[str] = MODALITIES,
    card_path: str | os.PathLike | None = None,
    late_fusion_path: str | os.PathLike | None = None,
    folds: int = 5,
    bootstrap: int = 1000,
    images_are_face_crops: bool = False,
    audio_head: str | os.PathLike | Mapping[str, str | os.PathLike] | None = None,
    asr_model: str = "base",
    language: str | None = None,
    options: AttentionOptions | None = None,
    notes: str | None = None,
    threads: int = 2,
    progress: bool = True,
    predictions: Predictions | None = None,
) -> dict:
    """Train the attention fusion (and stack late-fusion weights) on a labelled manifest.

    Args:
        manifest: the labelled manifest CSV (labels in :data:`~multimodal_ser.labels.EMOTIONS`;
            ``group`` = speaker; rows of several sources may be mixed, see the module docstring).
        out_path: the module file (safetensors). Inside the package's ``models`` folder its sha256
            is recorded in ``SHA256SUMS``.
        seed: folds, validation split, initialisation, batch order and modality dropout.
        modalities: the branches to run and fuse.
        card_path: the model card (Markdown); None writes it beside ``out_path`` as ``<stem>.md``.
        late_fusion_path: also write late-fusion weights learned on all items (JSON) here, with the
            recipe of the packaged default (:mod:`multimodal_ser.training.fusion.late`).
        folds: group folds of the cross-fitted evaluation reported in the card (>= 2).
        bootstrap: resamples of the card's 95% intervals.
        images_are_face_crops: images are face crops already (FER2013): no face detection.
        audio_head: voice head(s), as in :func:`multimodal_ser.evaluation.predict_manifest`.
        asr_model, language: the speech encoder / transcriber and the spoken language for ASR.
        options: the attention module's architecture and training settings. None: the defaults,
            except that with ``audio_head`` given the voice embedding is left out (the module will
            run on the packaged head's embedding, a different space from the training heads').
        notes: Markdown appended to the card's "Limits" section (what the data can and cannot teach).
        threads: CPU threads for the speech models.
        progress: progress bars.
        predictions: the branches' outputs for ``manifest`` when already computed (skips the pass).

    Returns:
        A summary: ``out_path``, ``card_path``, ``late_fusion_path``, ``sha256`` (when recorded in
        the package), ``training`` (rows, epochs, temperature), ``late_fusion`` (weights, T, lapses, neutral say),
        ``cross_fitted`` (the evaluation's ``systems`` and ``by_presence``), ``runtime_s``.
    """
    began = time.monotonic()
    out_path = Path(out_path)
    card_path = card_beside(out_path, card_path)
    if predictions is None:
        predictions = predict_manifest(
            manifest, modalities=modalities, asr_model=asr_model, language=language,
            images_are_face_crops=images_are_face_crops, audio_head=audio_head, threads=threads, progress=progress,
        )
    if options is None:
        options = AttentionOptions()
        if audio_head is not None:
            log.info("other voice heads than the packaged one made the training data: voice read from its probabilities only")
            options = dataclasses.replace(options, embeddings=tuple(m for m in options.embeddings if m != "audio"))
    table = predictions.table
    labels = table["label"].to_numpy(dtype=object)
    groups = table["group"].to_numpy(dtype=object)
    log.info("cross-fitted evaluation of the fusions (%d folds by group)", folds)
    evaluation = compare_predictions(
        predictions, folds=folds, seed=seed, by_presence=True, bootstrap=bootstrap, attention_options=options
    )
    validation = group_folds(groups, folds=VALIDATION_FRACTION_FOLDS, seed=seed) == 0
    log.info("final attention fusion: %d training items, %d validation items (by group)", (~validation).sum(), validation.sum())
    provenance = _provenance(manifest, predictions, validation, seed)
    fusion = fit_attention_fusion(
        table[~validation], list(labels[~validation]), validation=(table[validation], list(labels[validation])),
        modalities=predictions.modalities, options=options, seed=seed, provenance=provenance,
    )
    saved = fusion.save(out_path)
    sha256 = record_if_packaged(saved)
    from .late import branch_priors, fit_default_fusion, item_sources

    priors, _ = branch_priors(table, predictions.modalities)
    late, _ = fit_default_fusion(table, labels, item_sources(table), predictions.modalities, priors=priors, provenance=provenance)
    if late_fusion_path is not None:
        late.save(late_fusion_path)
    summary = {
        "out_path": str(saved),
        "card_path": str(card_path),
        "late_fusion_path": None if late_fusion_path is None else str(late_fusion_path),
        "sha256": sha256,
        "training": {**fusion.config["training"], "temperature": fusion.temperature, "modalities": list(fusion.modalities)},
        "late_fusion": {"weights": late.weights, "temperature": late.temperature, "lapse": dict(late.lapse),
                        "neutral_say": dict(late.neutral_say)},
        "cross_fitted": {k: evaluation[k] for k in ("folds", "n_items", "n_groups", "fold_sizes", "systems", "by_presence")},
        "provenance": provenance,
        "runtime_s": round(time.monotonic() - began, 1),
    }
    write_card(card_path, model_card(summary, evaluation, out_name=saved.name, notes=notes))
    log.info("attention fusion written to %s (card %s) in %.0f s", saved, card_path, summary["runtime_s"])
    return summary


def _provenance(manifest, predictions: Predictions, validation: np.ndarray, seed: int) -> dict:
    table = predictions.table
    sources = table["source"].astype(str) if "source" in table else pd.Series(["all"] * len(table))
    patterns = presence_patterns(table, predictions.modalities, none="none")
    per_source = {}
    for source in sorted(set(sources)):
        inside = (sources == source).to_numpy()
        per_source[source] = {
            "items": int(inside.sum()),
            "groups": int(len(set(table.loc[inside, "group"]))),
            "presence": _label_counts([p for p, i in zip(patterns, inside) if i]),
            "labels": _label_counts(table.loc[inside, "label"]),
        }
    return {
        "manifest": predictions.model_ids.get("manifest"),
        "items": len(table),
        "failed_items": len(predictions.failures),
        "validation_items": int(validation.sum()),
        "validation_groups": int(len(set(table.loc[validation, "group"]))),
        "sources": per_source,
        "branch_models": {k: v for k, v in predictions.model_ids.items() if k != "manifest"},
        "seed": seed,
        "package_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def model_card(summary: dict, evaluation: dict, *, out_name: str, notes: str | None = None) -> str:
    """The Markdown model card of a trained attention fusion."""
    provenance = summary["provenance"]
    systems = evaluation["systems"]
    training = summary["training"]
    lines = [
        f"# {out_name}: attention fusion",
        "",
        "A small cross-modal Transformer over the modality tokens of a segment (see "
        "`multimodal_ser/fusion/attention.py`), trained with modality dropout. "
        f"Reads: {', '.join(training['modalities'])}; any other modality is ignored.",
        "",
        "## Training data",
        "",
        f"Manifest: `{(provenance['manifest'] or {}).get('path')}` (sha256 `{(provenance['manifest'] or {}).get('sha256')}`), "
        f"{provenance['items']} items ({provenance['failed_items']} failed). "
        f"Validation (early stopping, temperature): {provenance['validation_items']} items of "
        f"{provenance['validation_groups']} groups held out by group; seed {provenance['seed']}.",
        "",
        markdown_table(
            {
                s: {
                    "items": v["items"],
                    "groups": v["groups"],
                    "modalities present": ", ".join(f"{k}: {n}" for k, n in v["presence"].items()),
                    "labels": ", ".join(f"{k} {n}" for k, n in v["labels"].items()),
                }
                for s, v in provenance["sources"].items()
            },
            columns=["items", "groups", "modalities present", "labels"],
            index_name="source",
        ),
        "",
        f"Training: {training['n_rows']} rows, {training['epochs_run']} epochs (best {training['best_epoch']}), "
        f"validation log-loss {training['validation_log_loss']:.3f}, temperature {training['temperature']:.2f}.",
        "",
        "## Cross-fitted evaluation",
        "",
        f"{evaluation['folds']}-fold group cross-fitting over {evaluation['n_groups']} groups: every number below "
        "comes from fusions trained without the items' groups. 95% bootstrap intervals.",
        "",
        markdown_table(
            {v["name"]: v for v in systems.values()},
            columns=["n", "ua", "ua_ci", "wa", "macro_f1", "macro_f1_ci", "ece"],
            index_name="system",
        ),
        "",
        "Unweighted accuracy by which modalities the items have:",
        "",
        markdown_table(
            {f"{p} (n={part['n_items']})": {systems[k]["name"]: part["systems"][k].get("ua") for k in systems}
             for p, part in evaluation["by_presence"].items()},
            columns=[systems[k]["name"] for k in systems],
            index_name="items with",
        ),
        "",
        "Learned late fusion stacked on all items (for comparison): "
        + ", ".join(f"{m} {w:.2f}" for m, w in summary["late_fusion"]["weights"].items())
        + f", T {summary['late_fusion']['temperature']:.2f}, lapses "
        + ", ".join(f"{m} {v:g}" for m, v in summary["late_fusion"]["lapse"].items() if m in summary["late_fusion"]["weights"])
        + f", the words' neutral say {summary['late_fusion']['neutral_say']['text']:g}.",
        "",
    ]
    key = next((k for k in systems if k.startswith("attention:") and systems[k]["modalities"] == training["modalities"]), None)
    if key and "confusion" in systems[key]:
        lines += ["Confusion matrix of the attention fusion (cross-fitted, rows = truth):", "",
                  markdown_confusion(systems[key]["confusion"], labels=EMOTIONS), ""]
    seen = sorted({p for v in provenance["sources"].values() for p in v["presence"]})
    modalities = training["modalities"]
    combinations = ["+".join(c) for k in range(1, len(modalities) + 1) for c in itertools.combinations(modalities, k)]
    unseen = [c for c in combinations if c not in seen]
    lines += [
        "## Limits",
        "",
        f"Combinations of modalities seen in training: {', '.join(seen)}. "
        + (f"Never seen: {', '.join(unseen)}; on such segments the module combines what it learned from the "
           "others, which no data here has checked." if unseen else "Every combination was seen."),
        "",
    ]
    if notes:
        lines += [notes.strip(), ""]
    lines += [
        "## Branch models whose outputs it was trained on",
        "",
        "```json",
        json.dumps(provenance["branch_models"], indent=2, default=str),
        "```",
        "",
    ]
    return "\n".join(lines)
