"""The packaged default late fusion: learned on the branches' held-out predictions, with its card.

Recipe (:func:`fit_default_fusion`), on a manifest that mixes sources (RAVDESS voice + words, MELD
words, FER2013 faces; :func:`multimodal_ser.training.fusion.packaged_training_manifest`):

1. **Priors.** Each branch's evidence is read against its prior (see :mod:`multimodal_ser.fusion.late`):
   the ``calibration.prior`` stored in the text and face heads (their mean calibrated prediction
   on held-out data of their own); for the voice, the voice head's stored prior when it has one,
   else the mean voice prediction over the fitting items (held-out speakers).
2. **Where each modality is informative.** On each source, a modality's evidence alone must beat
   chance unweighted accuracy by :data:`INFORMATIVE_MARGIN`; on a source where it does not (the
   words of RAVDESS are two neutral sentences whatever the emotion) its evidence is left out of the
   fit, so its weight is learned where it carries information instead of being driven to zero by a
   corpus built to make it useless. It is still pooled at analysis time: being read against its
   prior, a branch that says what it says about everything moves the result little.
3. **Lapses and the words' neutral say.** The chance ``λ_m`` that a branch's reading of an item
   says nothing about it, and the say ``κ_text`` of words that read an item as neutral when
   another branch is present (see :mod:`multimodal_ser.fusion.late`), are chosen from
   :data:`LAPSE_GRID` and :data:`NEUTRAL_SAY_GRID` by group cross-validation inside the fitting
   items, for the lowest held-out log-loss of the fused predictions with every branch present
   pooled: first one lapse for all branches, then each branch's own lapse and ``κ_text`` in turn
   (coordinate descent, :data:`LAPSE_ROUNDS` rounds). This is where the words of RAVDESS count: a
   neutral sentence must not veto the fearful voice it was spoken with, nor call a sad voice
   neutral, while emotional words keep their say (a lapse bounds the evidence against a class; the
   evidence for one it only shrinks, and the stacked weight of step 4 scales it back).
4. **Weights and temperature** by stacking (:func:`multimodal_ser.fusion.fit_late_fusion`), every
   source and within it every class weighing the same in the log-loss.

:func:`train_default_fusion` also cross-fits this recipe by group (every item scored by a fusion
learned without its group), compares it with each branch alone, equal weights and the attention
fusion (cross-fitted the same way), overall and per source, and records which of late and
attention fusion is better on held-out items: that one becomes ``--fusion default``.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ... import __version__
from ...calibration import mean_prediction
from ...errors import ModelError
from ...evaluation import Predictions, compare_predictions, group_folds
from ...evaluation import metrics as M
from ...fusion import DEFAULT_PATH, LateFusion, balanced_row_weights, fit_late_fusion, modality_probabilities
from ...heads import MODELS_DIR, load_head, record_if_packaged
from ...labels import EMOTIONS
from ..install import card_beside, write_card

log = logging.getLogger(__name__)

LAPSE_GRID = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)
"""Candidate lapses ``λ_m`` of the recipe's step 3."""
NEUTRAL_SAY_GRID = (1.0, 0.5, 0.0)
"""Candidate ``κ_text`` of the recipe's step 3; the full say first, so that a tie keeps it."""
LAPSE_ROUNDS = 2
"""Rounds of the per-branch coordinate descent over :data:`LAPSE_GRID`."""
LAPSE_FOLDS = 3
"""Group folds of the lapse choice (inside the fitting items)."""

INFORMATIVE_MARGIN = 0.05
"""A modality is informative on a source when its UA there is at least chance + this."""

MIN_ROWS = 20
"""A modality needs this many items of a source to be judged there."""

HEAD_FILES = {"audio": "audio_head.safetensors", "text": "text_head.safetensors", "face": "face_head.safetensors"}


def branch_priors(table: pd.DataFrame, modalities, *, models_dir: Path = MODELS_DIR) -> tuple[dict, dict]:
    """``({modality: prior (7,)}, {modality: where it came from})`` (see the module docstring)."""
    priors, origin = {}, {}
    for m in modalities:
        stored = None
        path = models_dir / HEAD_FILES[m]
        if path.is_file():
            try:
                _, config = load_head(path)
                stored = (config.get("calibration") or {}).get("prior")
            except ModelError as e:
                log.warning("%s: %s", path, e)
        if stored is not None and len(stored) == len(EMOTIONS):
            priors[m] = tuple(float(x) for x in stored)
            origin[m] = f"{HEAD_FILES[m]}: calibration.prior ({(_calibration(path) or {}).get('fitted_on')})"
            continue
        probabilities, present = modality_probabilities(table, m)
        if present.any():
            priors[m] = tuple(mean_prediction(probabilities[present]))
            origin[m] = f"mean {m} prediction over the {int(present.sum())} fitting items (the head stores no prior)"
    return priors, origin


def _calibration(path: Path) -> dict | None:
    try:
        return load_head(path)[1].get("calibration")
    except ModelError:
        return None


def informative_modalities(table: pd.DataFrame, labels: np.ndarray, sources: np.ndarray, modalities, priors: dict) -> dict:
    """``{source: {modality: {"n", "ua", "chance", "informative"}}}``: each modality's UA alone (its
    prior-relative evidence) on each source where it is present on at least :data:`MIN_ROWS` items."""
    out: dict = {}
    for source in sorted(set(sources), key=str):
        inside = sources == source
        out[str(source)] = {}
        for m in modalities:
            probabilities, present = modality_probabilities(table, m)
            rows = inside & present
            if rows.sum() < MIN_ROWS:
                continue
            evidence = np.log(np.clip(probabilities[rows], 1e-6, 1)) - np.log(np.asarray(priors.get(m, np.ones(len(EMOTIONS)))))
            predicted = [EMOTIONS[i] for i in evidence.argmax(axis=1)]
            truth = list(labels[rows])
            ua = M.ua(truth, predicted, labels=EMOTIONS)
            chance = 1.0 / len(set(truth))
            out[str(source)][m] = {"n": int(rows.sum()), "ua": ua, "chance": chance, "informative": bool(ua >= chance + INFORMATIVE_MARGIN)}
    return out


def fit_default_fusion(
    table: pd.DataFrame, labels: np.ndarray, sources: np.ndarray, modalities, *, priors: dict, provenance: dict | None = None,
    seed: int = 0,
) -> tuple[LateFusion, dict]:
    """The recipe of the module docstring on ``table``. Returns the fusion and the informativeness table."""
    judged = informative_modalities(table, labels, sources, modalities, priors)
    fit_mask = {}
    for m in modalities:
        keep = np.ones(len(table), dtype=bool)
        for source, per in judged.items():
            if m in per and not per[m]["informative"]:
                keep &= sources.astype(str) != source
        fit_mask[m] = keep
    weights = balanced_row_weights(labels, sources)

    def fit(rows: np.ndarray, lapse: dict, neutral_say: float, provenance: dict | None = None) -> LateFusion:
        return fit_late_fusion(
            table[rows], list(labels[rows]), modalities=modalities, priors=priors, row_weights=weights[rows],
            fit_mask={m: mask[rows] for m, mask in fit_mask.items()}, lapse=lapse, neutral_say={"text": neutral_say},
            provenance=provenance,
        )

    lapse, neutral_say, losses = choose_lapse(table, labels, weights, fit, modalities, seed=seed)
    fusion = fit(np.ones(len(table), dtype=bool), lapse, neutral_say, {**(provenance or {}), "lapse_choice": losses})
    return dataclasses.replace(fusion, name="late"), judged


def choose_lapse(
    table: pd.DataFrame, labels: np.ndarray, weights: np.ndarray, fit, modalities, *, seed: int
) -> tuple[dict, float, dict]:
    """Each modality's lapse from :data:`LAPSE_GRID` and the words' neutral say from
    :data:`NEUTRAL_SAY_GRID`, for the lowest held-out log-loss over group folds of ``table``.

    First the best single lapse for every modality, then, for :data:`LAPSE_ROUNDS` rounds, each
    modality's lapse in turn with the others held, then the words' neutral say (when the words and
    another modality are among ``modalities``).

    Args:
        fit: ``fit(rows (n,) bool, {modality: lapse}, neutral say of the words) -> LateFusion`` fitted on those rows.
        weights: ``(n,)`` row weights of the log-loss.

    Returns:
        ``({modality: lapse}, κ_text, {"folds", "shared": {lapse: loss}, "per_modality": {modality: {lapse: loss}},
        "neutral_say": {κ: loss}})`` with the losses of the last round; every lapse 0 and κ 1 when there are
        too few groups.
    """
    groups = table["group"].to_numpy(dtype=object) if "group" in table else np.arange(len(table))
    if len(set(groups)) < LAPSE_FOLDS:
        return {m: 0.0 for m in modalities}, 1.0, {"folds": 0, "shared": {}, "per_modality": {}, "neutral_say": {}}
    fold = group_folds(groups, folds=LAPSE_FOLDS, seed=seed)
    y = np.array([EMOTIONS.index(label) for label in labels])
    memo: dict[tuple, float] = {}

    def held_out_loss(lapse: dict, neutral_say: float) -> float:
        key = (*(lapse[m] for m in modalities), neutral_say)
        if key not in memo:
            total = 0.0
            for f in range(LAPSE_FOLDS):
                probabilities, present = fit(fold != f, lapse, neutral_say).fuse(table[fold == f])
                rows = np.flatnonzero(fold == f)[present]
                picked = probabilities[present][np.arange(len(rows)), y[rows]]
                total += float((weights[rows] * -np.log(np.clip(picked, 1e-12, 1.0))).sum())
            memo[key] = total / float(weights.sum())
        return memo[key]

    neutral_say = 1.0
    shared = {v: held_out_loss({m: v for m in modalities}, neutral_say) for v in LAPSE_GRID}
    best = min(shared, key=shared.get)
    lapse = {m: best for m in modalities}
    per_modality: dict = {}
    says: dict = {}
    for _ in range(LAPSE_ROUNDS):
        for m in modalities:
            per_modality[m] = {v: held_out_loss({**lapse, m: v}, neutral_say) for v in LAPSE_GRID}
            lapse[m] = min(per_modality[m], key=per_modality[m].get)
        if "text" in modalities and len(modalities) > 1:
            says = {v: held_out_loss(lapse, v) for v in NEUTRAL_SAY_GRID}
            neutral_say = min(says, key=says.get)
    return lapse, neutral_say, {"folds": LAPSE_FOLDS, "shared": shared, "per_modality": per_modality, "neutral_say": says}


def item_sources(table: pd.DataFrame) -> np.ndarray:
    """The ``source`` of each row ``(n,)`` object, ``"all"`` everywhere when the table has none."""
    return (table["source"].astype(str) if "source" in table else pd.Series(["all"] * len(table))).to_numpy(dtype=object)


def cross_fit_default(predictions: Predictions, *, folds: int, seed: int, priors: dict) -> np.ndarray:
    """Out-of-fold probabilities ``(n, 7)`` of the recipe: each group fold scored by a fusion fitted on the others."""
    table = predictions.table
    labels = table["label"].to_numpy(dtype=object)
    sources = item_sources(table)
    fold = group_folds(table["group"].to_numpy(dtype=object), folds=folds, seed=seed)
    out = np.full((len(table), len(EMOTIONS)), np.nan)
    for f in range(folds):
        train, test = fold != f, fold == f
        fusion, _ = fit_default_fusion(table[train], labels[train], sources[train], predictions.modalities, priors=priors, seed=seed)
        out[test] = fusion.fuse(table[test])[0]
    return out


def _scores(probabilities: np.ndarray, labels: np.ndarray, rows: np.ndarray) -> dict | None:
    rows = rows & ~np.isnan(probabilities).any(axis=1)
    if not rows.any():
        return None
    predicted = [EMOTIONS[i] for i in probabilities[rows].argmax(axis=1)]
    truth = list(labels[rows])
    return {
        "n": int(rows.sum()), "ua": M.ua(truth, predicted, labels=EMOTIONS), "wa": M.wa(truth, predicted, labels=EMOTIONS),
        "macro_f1": M.macro_f1(truth, predicted, labels=EMOTIONS),
        "ece": M.expected_calibration_error(probabilities[rows], truth, labels=EMOTIONS),
    }


def train_default_fusion(
    predictions: Predictions, *, out_path: Path = DEFAULT_PATH, card_path: Path | None = None, folds: int = 5, seed: int = 0,
    bootstrap: int = 200, attention_options=None, data_note: str = "",
) -> dict:
    """Fit the packaged default late fusion on ``predictions``, compare it by group cross-fitting, save it with its card.

    Args:
        predictions: held-out branch predictions of a mixed manifest with a ``source`` column
            (:func:`multimodal_ser.evaluation.predict_manifest`).
        out_path: the JSON file; inside the package its sha256 goes into ``models/SHA256SUMS``.
        card_path: the Markdown card (None: beside ``out_path``).
        folds, seed: the group folds of the comparison.
        bootstrap: resamples for the comparison's intervals.
        attention_options: settings of the attention fusion cross-fitted for the comparison.
        data_note: Markdown on the data, for the card.

    Returns:
        ``{"fusion": describe(), "default": "late"|"attention", "comparison": {...}, "informative": {...}}``.
    """
    table = predictions.table
    labels = table["label"].to_numpy(dtype=object)
    sources = item_sources(table)
    modalities = predictions.modalities
    priors, prior_origin = branch_priors(table, modalities)
    provenance = {
        "data": {s: int((sources == s).sum()) for s in sorted(set(sources), key=str)},
        "manifest": predictions.model_ids.get("manifest"),
        "branch_models": {k: v for k, v in predictions.model_ids.items() if k != "manifest"},
        "priors_from": prior_origin,
        "seed": seed,
    }
    fusion, judged = fit_default_fusion(table, labels, sources, modalities, priors=priors, provenance=provenance, seed=seed)
    log.info("default late fusion: weights %s, T %.3f, lapses %s", fusion.weights, fusion.temperature, fusion.lapse)
    evaluation = compare_predictions(
        predictions, folds=folds, seed=seed, bootstrap=bootstrap, fusions=("late_equal", "attention"),
        attention_options=attention_options, return_probabilities=True,
    )
    oof = cross_fit_default(predictions, folds=folds, seed=seed, priors=priors)
    systems = {}
    everything = "+".join(modalities)
    for m in modalities:
        p, present = modality_probabilities(table, m)
        systems[f"{m} alone"] = np.where(present[:, None], p, np.nan)
    systems["late fusion, equal weights (the old default)"] = _oof(evaluation, f"late_equal:{everything}", table)
    systems["late fusion, this recipe (reliability-weighted evidence)"] = oof
    systems["attention fusion"] = _oof(evaluation, f"attention:{everything}", table)
    comparison = {"all": {}, "per_source": {}}
    for name, probabilities in systems.items():
        if probabilities is None:
            continue
        comparison["all"][name] = _scores(probabilities, labels, np.ones(len(table), bool))
        for s in sorted(set(sources), key=str):
            comparison["per_source"].setdefault(str(s), {})[name] = _scores(probabilities, labels, sources == s)
    late_name, attention_name = "late fusion, this recipe (reliability-weighted evidence)", "attention fusion"
    mean_ua = {
        name: float(np.mean([per[name]["ua"] for per in comparison["per_source"].values() if per.get(name)]))
        for name in (late_name, attention_name) if name in systems and systems[name] is not None
    }
    default = "attention" if mean_ua.get(attention_name, -1) > mean_ua.get(late_name, -1) else "late"
    fusion = dataclasses.replace(fusion, provenance={**fusion.provenance, "held_out_mean_ua_per_source": mean_ua})
    fusion.save(out_path, default=default, created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                package_version=__version__)
    sha256 = record_if_packaged(out_path)
    result = {"fusion": fusion.describe(), "default": default, "mean_ua_per_source": mean_ua, "comparison": comparison,
              "informative": judged, "sha256": sha256, "folds": folds, "n_items": len(table), "notes": evaluation.get("notes", [])}
    write_card(card_beside(out_path, card_path), card(result, data_note=data_note, out_name=out_path.name))
    return result


def _oof(evaluation: dict, key: str, table: pd.DataFrame) -> np.ndarray | None:
    """One system's out-of-fold probabilities from :func:`compare_predictions` (None if it was not scored)."""
    return evaluation.get("probabilities", {}).get(key)


def card(result: dict, *, data_note: str, out_name: str) -> str:
    """The Markdown card of the packaged default late fusion."""
    described = result["fusion"]
    provenance = described.get("provenance", {})
    columns = ["n", "ua", "wa", "macro_f1", "ece"]
    lines = [
        f"# {out_name}: the default fusion",
        "",
        "Late fusion (`multimodal_ser/fusion/late.py`): for the modalities present on a segment, "
        "`logit(y) = Σ_m w_m · q_m · (log p̃_m(y) − log π_m(y)) / T` with `p̃_m = (1 − λ_m) p_m + λ_m π_m`, `p_m` the branch's "
        "calibrated probabilities, `π_m` its prior, `λ_m` its lapse (the chance that the branch's reading of a segment says "
        "nothing about it: it cannot veto a class by more than `log λ_m`, while its evidence for a class is not capped), `q_m` the segment's quality for that "
        "modality (the face: frames seen, 0.05 for a static face) and no class bias; where another branch is present, words that read a segment as "
        "neutral keep the share `κ_text` of their say. Learned by `mser train fusion` "
        "(`multimodal_ser/training/fusion/late.py`).",
        "",
        f"`--fusion default` runs **{result['default']} fusion**: of the two, it has the higher unweighted accuracy on "
        "held-out items, averaged over the sources below (each source counts the same): "
        + ", ".join(f"{k} {v:.3f}" for k, v in result["mean_ua_per_source"].items()) + ".",
        "",
        "## Parameters",
        "",
        "| modality | weight w | w / T | lapse λ | prior π (" + ", ".join(EMOTIONS) + ") | prior from |",
        "|---|---|---|---|---|---|",
    ]
    for m, w in described["weights"].items():
        prior = described.get("priors", {}).get(m)
        lines.append(
            f"| {m} | {w:.3f} | {w / described['temperature']:.3f} | {described['lapse'].get(m, 0.0):g} | "
            + (", ".join(f"{x:.3f}" for x in prior) if prior else "uniform") + f" | {provenance.get('priors_from', {}).get(m, '')} |"
        )
    choice = provenance.get("lapse_choice", {})

    def losses(by_lapse: dict) -> str:
        return ", ".join(f"{float(k):g}: {v:.4f}" for k, v in by_lapse.items())

    lines += ["", f"Temperature T = {described['temperature']:.3f}. sha256 `{result.get('sha256')}`.", "",
              f"The lapses were chosen by {choice.get('folds')}-fold group cross-validation inside the fitting items, "
              "for the lowest held-out log-loss of the fused predictions with every branch present: first one lapse for all "
              f"branches ({losses(choice.get('shared', {}))}), then each branch's own in turn, the others held (last round: "
              + "; ".join(f"{m} {losses(v)}" for m, v in choice.get("per_modality", {}).items()) + ").", "",
              (f"The words' neutral say κ_text = {described.get('neutral_say', {}).get('text', 1.0):g}: where another branch is present, "
               "words that read a segment as neutral keep this share of their say (emotional words, and words alone, keep all of "
               "it); chosen with the lapses, last round "
               f"({losses(choice.get('neutral_say', {}))})."), "", "## Data", ""]
    lines += [data_note.strip(), ""] if data_note else []
    lines += [
        "Items per source: " + ", ".join(f"{s} {n}" for s, n in provenance.get("data", {}).items()) + ".",
        "",
        "Where each modality is informative (its prior-relative evidence alone; chance = 1 / classes in the source). "
        "A modality's evidence enters the fit only on the sources where it is informative:",
        "",
        "| source | modality | n | UA alone | chance | informative |",
        "|---|---|---|---|---|---|",
    ]
    for source, per in result["informative"].items():
        for m, v in per.items():
            lines.append(f"| {source} | {m} | {v['n']} | {v['ua']:.3f} | {v['chance']:.3f} | {'yes' if v['informative'] else 'no'} |")
    lines += [
        "",
        f"## Held-out comparison ({result['folds']}-fold group cross-fitting: every item scored by fusions learned without its group)",
        "",
        "All items:",
        "",
        M.markdown_table({k: v for k, v in result["comparison"]["all"].items() if v}, columns=columns, index_name="system"),
        "",
    ]
    for source, per in result["comparison"]["per_source"].items():
        lines += [f"{source}:", "", M.markdown_table({k: v for k, v in per.items() if v}, columns=columns, index_name="system"), ""]
    lines += [f"Note: {n}" for n in result.get("notes", [])]
    lines += [
        "## Limits",
        "",
        "- No data here has all three modalities of one person together with labels: the voice and the words meet only "
        "on RAVDESS (where the words carry no emotion), the face is learned from FER2013 stills alone. How much to trust "
        "the face against the voice on video is therefore set by each branch's own calibration and the stacking, not "
        "observed. Learn your own weights on labelled data like yours: `mser train fusion --manifest your.csv --out my-fusion`, "
        "then `mser analyze --fusion late --fusion-weights my-fusion/late_fusion.json`.",
        "- Re-learn this file whenever a branch head changes (a new voice head, a new calibration): "
        "`mser train fusion --late-only --data ../shared/data --out multimodal_ser/models`.",
        "",
        "## Branch models whose predictions it was learned from",
        "",
        "```json",
        json.dumps(provenance.get("branch_models", {}), indent=2, default=str),
        "```",
        "",
    ]
    return "\n".join(lines)
