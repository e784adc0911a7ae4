"""Calibration of the packaged text and face heads on held-out data of their own.

A fused label is only as good as the probabilities it pools: a 0.9 from the face must mean what a
0.9 from the words means. Each head gets one temperature (:mod:`multimodal_ser.calibration`)
fitted on data it was not trained on, and a prior (its mean calibrated prediction on that data)
that fusion reads its evidence against. Both are stored in the head's config under
``calibration``; the tensors are re-saved unchanged (:func:`multimodal_ser.heads.update_head_config`),
so calibrating needs no retraining. The model card gets a section with the expected calibration
error (15 bins) before and after and a reliability table, on the fitting split and on a split
that neither training nor calibration saw.

- **words** (:func:`calibrate_text_head`): fitted on the head's validation split (GoEmotions dev
  and the MELD train dialogues held out for validation: used for early stopping and
  hyper-parameters, never for gradient steps); reported on GoEmotions test and MELD dev, the
  sets the card calls held out.
- **face** (:func:`calibrate_face_head`): fitted on FER2013 PublicTest (which chose the epoch),
  reported on PrivateTest; the mirror-averaged output the package uses and the single crop each
  get their own temperature.

The voice head is calibrated by its own training (``mser train audio``), on held-out speakers.

``mser calibrate text|face`` (or ``python -m multimodal_ser.training.calibrate``) re-runs either.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..calibration import fit_temperature, markdown_reliability, mean_prediction, reliability_table
from ..evaluation import metrics as M
from ..files import sha256_file
from ..fusion.base import softmax
from ..heads import in_package, update_head_config
from ..labels import EMOTIONS, SENTIMENTS
from .install import card_beside, write_card

log = logging.getLogger(__name__)

CARD_BEGIN = "<!-- calibration: written by multimodal_ser.training.calibrate -->"
CARD_END = "<!-- /calibration -->"


def _report(probabilities: np.ndarray, targets: np.ndarray, temperature: float, labels) -> dict:
    """ECE, accuracy and log-loss before and after, and the reliability tables, of one split."""
    from ..calibration import apply_temperature

    calibrated = apply_temperature(probabilities, temperature)
    names = [labels[i] for i in targets]
    rows = np.arange(len(targets))
    out = {"n": int(len(targets))}
    for tag, p in (("before", probabilities), ("after", calibrated)):
        out[tag] = {
            "ece": M.expected_calibration_error(p, names, labels=labels),
            "log_loss": float(-np.log(np.clip(p[rows, targets], 1e-12, 1.0)).mean()),
            "mean_confidence": float(p.max(axis=1).mean()),
            "accuracy": float((p.argmax(axis=1) == targets).mean()),
            "reliability": reliability_table(p, targets),
        }
    return out


def _calibration_record(fitted_on: str, temperature: float, prior: np.ndarray, reports: dict, **extra) -> dict:
    return {
        "method": "temperature scaling: p^(1/T) renormalised, T of minimum log-loss on the fitting split",
        "temperature": float(temperature),
        "prior": [float(x) for x in prior],
        "prior_labels": list(EMOTIONS),
        "fitted_on": fitted_on,
        "ece": {split: {"n": r["n"], "before": r["before"]["ece"], "after": r["after"]["ece"]} for split, r in reports.items()},
        "package_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **extra,
    }


def card_section(
    title: str, fitted_on: str, temperature: float, reports: dict, *, sha256: str, extra: str = "", weighting: str = ""
) -> str:
    """The Markdown calibration section of a card: ECE before/after per split and reliability tables."""
    lines = [
        CARD_BEGIN,
        "## Calibration",
        "",
        f"{title}: temperature T = {temperature:.3f} fitted on {fitted_on} (minimum log-loss{weighting}; the label never "
        "changes, only the confidence), stored in the head's config under `calibration` and applied by the package. "
        f"Expected calibration error (ECE, 15 equal-width bins of top-class confidence). sha256 after calibration `{sha256}`.",
        "",
        "| split | n | ECE before | ECE after | mean confidence before | after | accuracy | log-loss before | after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for split, r in reports.items():
        b, a = r["before"], r["after"]
        lines.append(
            f"| {split} | {r['n']} | {b['ece']:.3f} | **{a['ece']:.3f}** | {b['mean_confidence']:.3f} | {a['mean_confidence']:.3f} "
            f"| {a['accuracy']:.3f} | {b['log_loss']:.3f} | {a['log_loss']:.3f} |"
        )
    for split, r in reports.items():
        lines += ["", f"Reliability on {split} (10 bins; a calibrated head has accuracy close to its mean confidence in every bin):", ""]
        lines.append(markdown_reliability(r["before"]["reliability"], r["after"]["reliability"]))
    if extra:
        lines += ["", extra.strip()]
    lines += ["", CARD_END, ""]
    return "\n".join(lines)


def write_card_section(card_path: Path, section: str, *, old_sha256: str, sha256: str) -> None:
    """Put ``section`` into the card (replacing an earlier one); where the card names the head's
    sha256 before calibration, it now names the new one."""
    text = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    pattern = re.compile(re.escape(CARD_BEGIN) + r".*?" + re.escape(CARD_END) + r"\n?", re.S)
    text = pattern.sub("", text).rstrip("\n").replace(old_sha256, sha256)
    write_card(card_path, text + "\n\n" + section)


def _per_corpus(corpus: np.ndarray) -> np.ndarray:
    """Row weights ``(n,)`` that give each corpus the same total."""
    names, counts = np.unique(corpus, return_counts=True)
    return 1.0 / counts[np.searchsorted(names, corpus)]


def calibrate_text_head(
    data_dir: str | os.PathLike, head_path: str | os.PathLike | None = None, *, card_path: str | os.PathLike | None = None
) -> dict:
    """Fit and store the text head's temperatures (emotion and sentiment) and its prior.

    Args:
        data_dir: folder with ``goemotions/`` and ``meld/`` (``../shared/data``).
        head_path: the head; None is the packaged one.
        card_path: its model card (None: ``<head>.md`` beside it, if it exists).

    Returns:
        the ``calibration`` record stored in the head's config, plus ``reports`` (every split's
        ECE, log-loss and reliability table, before and after).
    """
    from ..text import DEFAULT_HEAD_PATH, TextEmotionModel
    from .text import embed_cached, load_goemotions, load_meld, meld_validation_dialogues

    data_dir = Path(data_dir)
    head_path = Path(head_path) if head_path is not None else DEFAULT_HEAD_PATH
    model = TextEmotionModel(head_path=head_path, calibrated=False)
    head, config, encoder = model.head, model.head_config, model.encoder
    seed = int((config.get("training") or {}).get("seed", 0))
    meld_train = load_meld(data_dir, "train")
    in_val = np.isin(meld_train.groups, meld_validation_dialogues(meld_train.groups, seed=seed))
    sets = {
        "GoEmotions dev + MELD validation dialogues (fit)": [load_goemotions(data_dir, "dev"), meld_train.subset(in_val, "meld/train-val")],
        "GoEmotions test (held out)": [load_goemotions(data_dir, "test")],
        "MELD dev (held out)": [load_meld(data_dir, "dev")],
    }
    outputs, corpus = {}, {}
    for name, parts in sets.items():
        logits, emotion, sentiment, origin = [], [], [], []
        for part in parts:
            origin += [part.name.split("/")[0]] * len(part)
            x, _ = embed_cached(encoder, part.texts, name=part.name)
            with torch.inference_mode():
                logits.append(head(torch.from_numpy(x)).double().numpy())
            emotion.append(np.where(part.single_label, part.emotion.argmax(axis=1), -1))
            sentiment.append(part.sentiment)
        outputs[name] = (np.concatenate(logits), np.concatenate(emotion), np.concatenate(sentiment))
        corpus[name] = np.array(origin)
    k = len(EMOTIONS)

    fit_name = next(iter(sets))
    fit_logits, fit_emotion, fit_sentiment = outputs[fit_name]
    rows = fit_emotion >= 0
    # GoEmotions dev is five times MELD's validation dialogues: each corpus counts the same
    temperature = fit_temperature(softmax(fit_logits[rows, :k]), fit_emotion[rows], weights=_per_corpus(corpus[fit_name][rows]))
    srows = fit_sentiment >= 0
    sentiment_temperature = fit_temperature(
        softmax(fit_logits[srows, k:]), fit_sentiment[srows], weights=_per_corpus(corpus[fit_name][srows])
    )
    reports, sentiment_reports = {}, {}
    for name, (logits, emotion, sentiment) in outputs.items():
        single = emotion >= 0
        reports[name] = _report(softmax(logits[single, :k]), emotion[single], temperature, EMOTIONS)
        labelled = sentiment >= 0
        sentiment_reports[name] = _report(softmax(logits[labelled, k:]), sentiment[labelled], sentiment_temperature, SENTIMENTS)
    from ..calibration import apply_temperature

    prior = mean_prediction(apply_temperature(softmax(fit_logits[:, :k]), temperature))
    record = _calibration_record(
        fit_name, temperature, prior, reports, sentiment_temperature=float(sentiment_temperature),
        sentiment_ece={s: {"before": r["before"]["ece"], "after": r["after"]["ece"]} for s, r in sentiment_reports.items()},
        note="emotion: single-label rows only; each corpus of the fitting split weighs the same; "
        "prior = mean calibrated emotion probabilities over every row of the fitting split",
    )
    old_sha256 = sha256_file(head_path)
    sha256 = update_head_config(head_path, {"calibration": record})
    log.info("text head %s: T = %.3f (sentiment %.3f), sha256 %s", head_path.name, temperature, sentiment_temperature, sha256)
    card_path = card_beside(head_path, card_path)
    if card_path.is_file() or in_package(head_path):
        sentiment_lines = "\n".join(
            f"| {s} | {r['n']} | {r['before']['ece']:.3f} | {r['after']['ece']:.3f} |" for s, r in sentiment_reports.items()
        )
        extra = (
            f"Sentiment has its own temperature, T = {sentiment_temperature:.3f}, fitted on the same split:\n\n"
            "| split (sentiment) | n | ECE before | ECE after |\n|---|---|---|---|\n" + sentiment_lines + "\n\n"
            "Fusion reads the words' evidence against the head's prior, its mean calibrated prediction on the fitting split: "
            + ", ".join(f"{label} {p:.3f}" for label, p in zip(EMOTIONS, prior)) + "."
        )
        section = card_section(
            "Emotion", fit_name, temperature, reports, sha256=sha256, extra=extra, weighting=", each corpus weighing the same"
        )
        write_card_section(card_path, section, old_sha256=old_sha256, sha256=sha256)
    return {**record, "sha256": sha256, "reports": reports, "sentiment_reports": sentiment_reports}


def calibrate_face_head(
    data_dir: str | os.PathLike, head_path: str | os.PathLike | None = None, *, card_path: str | os.PathLike | None = None
) -> dict:
    """Fit and store the face head's temperatures (mirror-averaged and single crop) and its prior.

    Fitted on FER2013 PublicTest (``fer2013/val``), reported on PrivateTest (``fer2013/test``).

    Returns:
        as :func:`calibrate_text_head`.
    """
    from ..calibration import apply_temperature
    from ..face.expression import DEFAULT_FACE_HEAD, ExpressionModel, read_label_folder
    from .face import fer2013_root

    root = fer2013_root(data_dir)
    head_path = Path(head_path) if head_path is not None else DEFAULT_FACE_HEAD
    splits = {"FER2013 PublicTest (fit)": root / "val", "FER2013 PrivateTest (held out)": root / "test"}
    temperatures, all_reports, priors = {}, {}, {}
    for mirror in (True, False):
        model = ExpressionModel(weights=head_path, mirror_average=mirror, calibrated=False)
        outputs = {}
        for name, folder in splits.items():
            images, labels = read_label_folder(folder, size=model.input_size)
            probabilities = model.predict(images)[0]
            outputs[name] = (probabilities, np.array([EMOTIONS.index(label) for label in labels]))
        fit_probabilities, fit_targets = outputs["FER2013 PublicTest (fit)"]
        t = fit_temperature(fit_probabilities, fit_targets)
        temperatures[mirror] = t
        priors[mirror] = mean_prediction(apply_temperature(fit_probabilities, t))
        all_reports[mirror] = {name: _report(p, y, t, EMOTIONS) for name, (p, y) in outputs.items()}
        log.info("face head %s (mirror_average=%s): T = %.3f", head_path.name, mirror, t)
    reports = all_reports[True]
    record = _calibration_record(
        "FER2013 PublicTest", temperatures[True], priors[True], reports,
        temperature_single_crop=float(temperatures[False]),
        ece_single_crop={s: {"before": r["before"]["ece"], "after": r["after"]["ece"]} for s, r in all_reports[False].items()},
        note="temperature: mirror-averaged outputs (the package's default); temperature_single_crop: one crop",
    )
    old_sha256 = sha256_file(head_path)
    sha256 = update_head_config(head_path, {"calibration": record})
    card_path = card_beside(head_path, card_path)
    if card_path.is_file() or in_package(head_path):
        single = "\n".join(
            f"| {s} | {r['n']} | {r['before']['ece']:.3f} | {r['after']['ece']:.3f} |" for s, r in all_reports[False].items()
        )
        extra = (
            f"Single crops (`mirror_average=False`) have their own temperature, T = {temperatures[False]:.3f}:\n\n"
            "| split (single crop) | n | ECE before | ECE after |\n|---|---|---|---|\n" + single + "\n\n"
            "Calibrated on FER2013's posed, cropped web faces: on video frames the probabilities are calibrated only as "
            "far as those frames resemble FER2013. Fusion reads the face's evidence against its prior, its mean "
            "calibrated prediction on PublicTest: " + ", ".join(f"{label} {p:.3f}" for label, p in zip(EMOTIONS, priors[True])) + "."
        )
        section = card_section("Mirror-averaged output", "FER2013 PublicTest", temperatures[True], reports, sha256=sha256, extra=extra)
        write_card_section(card_path, section, old_sha256=old_sha256, sha256=sha256)
    return {**record, "sha256": sha256, "reports": reports, "single_crop_reports": all_reports[False]}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    parser = argparse.ArgumentParser(description="Calibrate the packaged text or face head on held-out data of its own.")
    parser.add_argument("what", choices=("text", "face"))
    default = os.environ.get("MSER_DATA") or None  # as `mser train`: no guess at where the data lies
    parser.add_argument("--data", type=Path, default=default, required=default is None, help="real data folder (default: $MSER_DATA)")
    parser.add_argument("--head", type=Path, help="head file (default: the packaged one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run = calibrate_text_head if args.what == "text" else calibrate_face_head
    result = run(args.data, args.head)
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("reports")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
