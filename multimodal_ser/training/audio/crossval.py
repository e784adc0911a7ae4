"""Honest evaluation of the voice head: speaker-disjoint folds over all corpora, and leave one corpus out.

- :func:`cross_validate_audio`: the speakers of every corpus are dealt into folds; each fold's head
  is trained on the other folds' speakers of ALL corpora and predicts its own. No speaker is ever
  on both sides. The pooled held-out predictions also calibrate the shipped head (one temperature).
- :func:`leave_one_corpus_out`: for each corpus, a head trained on the others only, tested on it:
  the number a user with a new language, recording set-up and speaking style can expect. A head
  trained on RAVDESS alone is scored beside it.

Per test corpus: UA over the corpus's own classes (closed: the most probable of those; chance
1/k), UA when every shared label may be predicted (open: what a user sees), WA, macro-F1, the
**angry false-alarm rate** (share of non-angry clips labelled angry, open), confusion matrices,
ECE before and after calibration, UA per sex where it is known, and each condition (packed with
the speaker's other clips, isolated, telephone).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ... import voice
from ...calibration import apply_temperature, fit_temperature, markdown_reliability, reliability_table
from ...evaluation import metrics
from ...labels import EMOTIONS, RAVDESS_8
from .conditions import CLEAN, ISOLATED, Condition
from .corpus import Corpus, corpus_folders, label_sets, training_manifest
from .features import extract_features
from .head import RECIPE, HeadRecipe, augment_conditions, corpus_weights, fit_head, predict_head, training_rows

log = logging.getLogger(__name__)

TESTED: tuple[str, ...] = ("clean", ISOLATED, "telephone")
"""The versions of the held-out clips every evaluation scores."""
HEAD_NAME = "voice head"
BASELINE_NAME = "MFCC stats + logistic regression"


@dataclasses.dataclass(frozen=True)
class Data:
    """Everything a fold needs: the clips' manifest, their features and what their labels say."""

    manifest: pd.DataFrame
    features: dict[str, np.ndarray]
    targets: np.ndarray
    """shape ``(n, 8)`` bool target sets (:func:`.corpus.label_sets`)."""
    allowed: np.ndarray
    """shape ``(n, 8)`` bool."""

    @classmethod
    def load(cls, folders: Mapping[str, Path], *, recipe: HeadRecipe, seed: int, tested: Sequence[str] = TESTED) -> Data:
        """The corpora ``{name: folder}`` (:func:`.corpus.corpus_folders`), decoded, with every condition the
        evaluation scores and the recipe trains on encoded (or read from the cache)."""
        manifest = training_manifest(folders)
        corpus = Corpus.load(manifest)
        conditions = [Condition.parse(n) for n in tested]
        conditions += [c for c in augment_conditions(recipe) if c not in conditions]
        features = extract_features(corpus, conditions, seed=seed)
        targets, allowed = label_sets(manifest["label8"], manifest["corpus"])
        return cls(corpus.manifest, features, targets, allowed)

    def fit(self, rows: np.ndarray, *, recipe: HeadRecipe, seed: int) -> voice.VoiceHead:
        """A head trained on the clips ``rows`` (bool, shape ``(n,)``) and their augmented versions."""
        weights = np.ones(len(self.manifest))
        if recipe.balance_corpora:  # balanced among the corpora being trained on
            weights[rows] = corpus_weights(self.manifest["corpus"][rows])
        features = {name: self.referenced(name, rows, recipe=recipe, keep_shape=True) for name in self.features}
        x, t, a, w = training_rows(features, recipe, rows, self.targets, self.allowed, weights)
        return fit_head(x, t, allowed=a, weights=w, seed=seed, recipe=recipe)

    def referenced(self, condition: str, rows: np.ndarray, *, recipe: HeadRecipe, keep_shape: bool = False) -> np.ndarray:
        """The features of version ``condition`` of the clips ``rows`` (bool, shape ``(n,)``), as a
        head of ``recipe`` reads them: with reference ``collection``, each corpus's mean over those
        rows removed. Shape ``(rows.sum(), F)``, or ``(n, F)`` with the other rows as they are when ``keep_shape``."""
        x = self.features[condition]
        if recipe.reference == "none":  # as computed: no copy
            return x if keep_shape else x[rows]
        chosen = voice.centre_by_collection(x[rows], self.manifest["corpus"].to_numpy()[rows])
        if not keep_shape:
            return chosen
        out = x.copy()
        out[rows] = chosen
        return out


def speaker_folds(manifest: pd.DataFrame, *, folds: int, seed: int) -> list[list[str]]:
    """Speakers of each test fold: shuffled (seeded) within each corpus and sex, then dealt round-robin
    in one continuing deal, so every fold holds speakers of every corpus and both sexes where possible."""
    speakers = manifest.groupby("speaker", sort=True).agg(corpus=("corpus", "first"), sex=("sex", "first"))
    if not 2 <= folds <= len(speakers):
        raise ValueError(f"folds must be between 2 and the number of speakers ({len(speakers)}), not {folds}")
    rng = np.random.default_rng(seed)
    order = []
    for (_, _), members in speakers.fillna({"sex": "unknown"}).groupby(["corpus", "sex"], sort=True):
        order.extend(rng.permutation(members.index.to_numpy()))
    return [sorted(order[k::folds]) for k in range(folds)]


def _mfcc_columns() -> np.ndarray:
    from .features import ENCODER_NAME, ENCODER_SHAPES

    n_layers, d_model = ENCODER_SHAPES[ENCODER_NAME]
    first = 2 * n_layers * d_model + voice.HAND_FEATURES.index(voice.MFCC_FEATURES[0])
    return np.arange(first, first + len(voice.MFCC_FEATURES))


def _fit_baseline(features: np.ndarray, labels7: np.ndarray):
    """The classic recipe on MFCC statistics: standardise, then logistic regression (shared 7 labels)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000)).fit(features[:, _mfcc_columns()], labels7)


def _baseline_probabilities(model, features: np.ndarray) -> np.ndarray:
    """shape ``(n, 7)`` over EMOTIONS (zero for labels the baseline never saw)."""
    out = np.zeros((len(features), len(EMOTIONS)))
    out[:, [EMOTIONS.index(c) for c in model.classes_]] = model.predict_proba(features[:, _mfcc_columns()])
    return out


def score_corpus(
    probs7: np.ndarray, truth7: np.ndarray, *, groups: np.ndarray, sex: np.ndarray | None = None,
    calibrated7: np.ndarray | None = None, n_resamples: int, seed: int,
) -> dict:
    """Metrics of one test corpus from 7-label probabilities (see the module docstring)."""
    classes = [c for c in EMOTIONS if c in set(truth7)]
    columns = [EMOTIONS.index(c) for c in classes]
    closed = np.asarray(classes, dtype=object)[probs7[:, columns].argmax(axis=1)]
    opened = np.asarray(EMOTIONS, dtype=object)[probs7.argmax(axis=1)]
    kw = dict(groups=groups, n_resamples=n_resamples, seed=seed)
    out = {
        "classes": classes,
        "closed": metrics.summary(truth7, closed, labels=classes, **kw),
        "open": metrics.summary(truth7, opened, labels=list(EMOTIONS), probabilities=probs7, **kw),
    }
    not_angry = truth7 != "angry"
    out["angry_false_alarm"] = float(np.mean(opened[not_angry] == "angry")) if not_angry.any() else None
    if calibrated7 is not None:
        out["ece_calibrated"] = metrics.expected_calibration_error(calibrated7, truth7, labels=list(EMOTIONS))
    if sex is not None:
        for s in ("male", "female"):
            mask = sex == s
            if mask.sum() and len(set(truth7[mask])) > 1:
                out[f"{s}_ua"] = metrics.ua(truth7[mask], closed[mask], labels=classes)
        if "male_ua" in out and "female_ua" in out:
            out["sex_gap_ua"] = out["male_ua"] - out["female_ua"]
    return out


def _truth7(manifest: pd.DataFrame) -> np.ndarray:
    return np.asarray([EMOTIONS[voice.SHARED_SPACE[RAVDESS_8.index(l)].argmax()] for l in manifest["label8"]], dtype=object)


def _held_out(data: Data, test_masks: Sequence[np.ndarray], *, recipe: HeadRecipe, seed: int, tested: Sequence[str], desc: str):
    """Held-out 8-class probabilities of the head, and 7-label ones of the baseline, per condition."""
    n = len(data.manifest)
    head_p = {name: np.full((n, len(RAVDESS_8)), np.nan) for name in tested}
    base_p = {name: np.full((n, len(EMOTIONS)), np.nan) for name in tested}
    truth7 = _truth7(data.manifest)
    for k, test in enumerate(tqdm(test_masks, desc=desc, unit="fold")):
        head = data.fit(~test, recipe=recipe, seed=seed + k)
        baseline = _fit_baseline(data.features[CLEAN.name][~test], truth7[~test])
        for name in tested:
            rows = test & ~np.isnan(data.features[name]).all(axis=1)  # isolated: only the clips encoded alone
            head_p[name][rows] = predict_head(head, data.referenced(name, rows, recipe=recipe))
            base_p[name][rows] = _baseline_probabilities(baseline, data.features[name][rows])
    return head_p, base_p


def _report(data: Data, head_p: dict, base_p: dict, rows_by_corpus: dict[str, np.ndarray], *, temperature: float | None,
            n_resamples: int, seed: int) -> dict:
    """``{corpus: {condition: {model: score_corpus(...)}}}`` plus RAVDESS's 8-class figure."""
    truth7 = _truth7(data.manifest)
    speakers = data.manifest["speaker"].to_numpy()
    sex = data.manifest["sex"].to_numpy(dtype=object)
    out: dict = {}
    for corpus, corpus_rows in rows_by_corpus.items():
        out[corpus] = {}
        for condition in head_p:
            rows = corpus_rows & ~np.isnan(head_p[condition]).any(axis=1)
            p8 = head_p[condition][rows]
            calibrated = None if temperature is None else apply_temperature(p8, temperature) @ voice.SHARED_SPACE
            # intervals for the clean condition only (the others are read as differences from it)
            kw = dict(groups=speakers[rows], sex=sex[rows], n_resamples=n_resamples if condition == CLEAN.name else 1, seed=seed)
            entry = {HEAD_NAME: score_corpus(p8 @ voice.SHARED_SPACE, truth7[rows], calibrated7=calibrated, **kw)}
            entry[BASELINE_NAME] = score_corpus(base_p[condition][rows], truth7[rows], **kw)
            if corpus == "ravdess":
                truth8 = data.manifest["label8"].to_numpy(dtype=object)[rows]
                pred8 = np.asarray(RAVDESS_8, dtype=object)[p8.argmax(axis=1)]
                entry[HEAD_NAME]["8-class"] = metrics.summary(truth8, pred8, labels=list(RAVDESS_8), groups=speakers[rows],
                                                              n_resamples=kw["n_resamples"], seed=seed)
            out[corpus][condition] = entry
    return out


def cross_validate_audio(
    data_dir: str | os.PathLike,
    *,
    corpora: Sequence[str] | None = None,
    folds: int = 5,
    seed: int = 0,
    recipe: HeadRecipe = RECIPE,
    tested: Sequence[str] = TESTED,
    n_resamples: int = 1000,
    data: Data | None = None,
) -> dict:
    """Speaker-disjoint cross-validation over all corpora, and the calibration temperature it yields.

    Args:
        data_dir: the data folder; ``corpora`` names the corpora in it (None: every one found).
        data: the clips and features already loaded (:meth:`Data.load`); then ``data_dir`` and
            ``corpora`` are not read again.

    Returns:
        JSON-ready dict: ``folds`` (test speakers), ``results`` ``{corpus: {condition: {model:
        metrics}}}``, ``temperature`` (fitted on the pooled held-out clean, isolated and telephone
        predictions of all corpora, scored in the 7 shared labels), ``prior`` (the mean calibrated
        7-label prediction on them, each corpus weighing the same: what fusion reads evidence against), ``ece`` before/after per corpus, ``markdown``, ``runtime_seconds``.
    """
    started = time.perf_counter()
    if data is None:
        data = Data.load(corpus_folders(data_dir, corpora), recipe=recipe, seed=seed, tested=tested)
    corpora = list(dict.fromkeys(data.manifest["corpus"]))
    fold_speakers = speaker_folds(data.manifest, folds=folds, seed=seed)
    speakers = data.manifest["speaker"].to_numpy()
    masks = [np.isin(speakers, f) for f in fold_speakers]
    head_p, base_p = _held_out(data, masks, recipe=recipe, seed=seed, tested=tested, desc="speaker-disjoint folds")
    pooled = [c for c in (CLEAN.name, ISOLATED, "telephone") if c in head_p]
    stacked = np.concatenate([head_p[c] for c in pooled])
    truth = np.concatenate([_truth7(data.manifest)] * len(pooled))
    corpus = np.concatenate([data.manifest["corpus"].to_numpy()] * len(pooled))
    encoded = ~np.isnan(stacked).any(axis=1)
    target = np.array([EMOTIONS.index(t) for t in truth[encoded]])
    temperature = fit_temperature(stacked[encoded], target, into=voice.SHARED_SPACE)
    calibrated = apply_temperature(stacked[encoded], temperature) @ voice.SHARED_SPACE
    prior = np.mean([calibrated[corpus[encoded] == c].mean(axis=0) for c in np.unique(corpus)], axis=0)
    before = stacked[encoded] @ voice.SHARED_SPACE
    reliability = {
        "before": reliability_table(before, target),
        "after": reliability_table(calibrated, target),
        "ece_before": metrics.expected_calibration_error(before, truth[encoded], labels=list(EMOTIONS)),
        "ece_after": metrics.expected_calibration_error(calibrated, truth[encoded], labels=list(EMOTIONS)),
    }
    rows = {c: (data.manifest["corpus"] == c).to_numpy() for c in corpora}
    report = {
        "protocol": "speaker-disjoint",
        "corpora": list(corpora),
        "folds": fold_speakers,
        "seed": seed,
        "recipe": dataclasses.asdict(recipe),
        "temperature": temperature,
        "prior": [float(x) for x in prior],
        "reliability": reliability,
        "results": _report(data, head_p, base_p, rows, temperature=temperature, n_resamples=n_resamples, seed=seed),
        "runtime_seconds": time.perf_counter() - started,
    }
    report["markdown"] = markdown(report)
    return report


def leave_one_corpus_out(
    data_dir: str | os.PathLike,
    *,
    corpora: Sequence[str] | None = None,
    seed: int = 0,
    recipe: HeadRecipe = RECIPE,
    tested: Sequence[str] = TESTED,
    temperature: float | None = None,
    n_resamples: int = 1000,
    data: Data | None = None,
) -> dict:
    """Each corpus scored by a head trained on the other corpora only (and by one trained on RAVDESS only).

    Args:
        data_dir: the data folder; ``corpora`` names the corpora in it (None: every one found).
        data: the clips and features already loaded (:meth:`Data.load`), as for :func:`cross_validate_audio`.
        temperature: the calibration to apply for the calibrated ECE (e.g. :func:`cross_validate_audio`'s).

    Returns:
        JSON-ready dict like :func:`cross_validate_audio`'s, ``results`` per held-out corpus, and
        ``ravdess_only`` with the same metrics for a head trained on RAVDESS alone.
    """
    started = time.perf_counter()
    if data is None:
        data = Data.load(corpus_folders(data_dir, corpora), recipe=recipe, seed=seed, tested=tested)
    corpora = list(dict.fromkeys(data.manifest["corpus"]))
    if len(corpora) < 2:
        raise ValueError(f"leaving one corpus out needs at least two corpora, not {corpora}")
    corpus = data.manifest["corpus"].to_numpy()
    rows = {c: corpus == c for c in corpora}
    head_p, base_p = _held_out(data, [rows[c] for c in corpora], recipe=recipe, seed=seed, tested=tested, desc="left-out corpora")
    report = {
        "protocol": "leave one corpus out",
        "corpora": list(corpora),
        "seed": seed,
        "recipe": dataclasses.asdict(recipe),
        "temperature": temperature,
        "results": _report(data, head_p, base_p, rows, temperature=temperature, n_resamples=n_resamples, seed=seed),
    }
    others = [c for c in corpora if c != "ravdess"]
    if "ravdess" in corpora and others:
        only = ~rows["ravdess"]
        solo_p, solo_base = _held_out(data, [only], recipe=recipe, seed=seed, tested=tested, desc="RAVDESS-only head")
        report["ravdess_only"] = _report(data, solo_p, solo_base, {c: rows[c] for c in others}, temperature=temperature,
                                         n_resamples=n_resamples, seed=seed)
    report["runtime_seconds"] = time.perf_counter() - started
    report["markdown"] = markdown(report)
    return report


def _row(score: dict) -> dict:
    return {
        "UA (own classes)": score["closed"]["ua"], "95% CI": score["closed"]["ua_ci"], "UA (all 7)": score["open"]["ua"],
        "WA": score["closed"]["wa"], "macro-F1": score["closed"]["macro_f1"],
        "angry false alarms": score["angry_false_alarm"], "ECE": score["open"].get("ece"),
        "ECE calibrated": score.get("ece_calibrated"), "male UA": score.get("male_ua"), "female UA": score.get("female_ua"),
        "n": score["closed"]["n"],
    }


COLUMNS = ["UA (own classes)", "95% CI", "UA (all 7)", "WA", "macro-F1", "angry false alarms", "ECE", "ECE calibrated",
           "male UA", "female UA", "n"]


def markdown(report: dict) -> str:
    """A cross-validation or leave-one-corpus-out report as Markdown tables."""
    results = report["results"]
    title = (
        f"Speaker-disjoint cross-validation over {', '.join(report['corpora'])} ({len(report['folds'])} folds; 95% CI: bootstrap over speakers)"
        if report["protocol"] == "speaker-disjoint"
        else f"Leave one corpus out over {', '.join(report['corpora'])}: each corpus tested by a head trained on the others only"
    )
    rows = {}
    for corpus, by_condition in results.items():
        for model, score in by_condition[CLEAN.name].items():
            rows[f"{corpus}, {model}"] = _row(score)
    for corpus, by_condition in report.get("ravdess_only", {}).items():
        rows[f"{corpus}, voice head trained on RAVDESS only"] = _row(by_condition[CLEAN.name][HEAD_NAME])
    parts = [title, "", metrics.markdown_table(rows, columns=COLUMNS, index_name="test corpus, model")]
    if report.get("temperature") is not None:
        parts += ["", f"Calibration temperature: {report['temperature']:.3f} (ECE calibrated: with it applied)."]
    if report.get("reliability") is not None:
        parts += ["", "Reliability of the 7-label top confidence on the pooled held-out clean, isolated and telephone "
                  "predictions of all corpora, before and after the temperature (a calibrated head has accuracy = confidence)", "",
                  markdown_reliability(report["reliability"]["before"], report["reliability"]["after"])]
        if "ece_after" in report["reliability"]:
            parts += ["", f"ECE of those pooled held-out predictions (15 bins): {report['reliability']['ece_before']:.3f} "
                      f"before the temperature, **{report['reliability']['ece_after']:.3f}** after. The per-corpus ECE (table above) "
                      "is higher: one temperature serves every corpus, as it must when the corpus of a recording is unknown."]
    conditions = list(next(iter(results.values())))
    if len(conditions) > 1:
        table = {
            corpus: {c: by_condition[c][HEAD_NAME]["closed"]["ua"] for c in conditions}
            for corpus, by_condition in results.items()
        }
        parts += ["", "Voice head UA (own classes) on the held-out clips packed with their speaker's other clips (clean), "
                  "each alone in a window (isolated), and through a telephone channel", "",
                  metrics.markdown_table(table, columns=conditions, index_name="test corpus")]
        false_alarms = {
            corpus: {c: by_condition[c][HEAD_NAME]["angry_false_alarm"] for c in conditions}
            for corpus, by_condition in results.items()
        }
        parts += ["", "Angry false-alarm rate (share of non-angry clips labelled angry) by condition", "",
                  metrics.markdown_table(false_alarms, columns=conditions, index_name="test corpus")]
    ravdess = results.get("ravdess", {}).get(CLEAN.name, {}).get(HEAD_NAME, {}).get("8-class")
    if ravdess is not None:
        parts += ["", f"RAVDESS 8-class (calm kept apart): UA {ravdess['ua']:.3f} [{ravdess['ua_ci'][0]:.3f}, "
                  f"{ravdess['ua_ci'][1]:.3f}], WA {ravdess['wa']:.3f}, macro-F1 {ravdess['macro_f1']:.3f}"]
    for corpus, by_condition in results.items():
        score = by_condition[CLEAN.name][HEAD_NAME]
        parts += ["", f"Confusion, {corpus}, voice head, all 7 labels may be predicted (rows: truth)", "",
                  metrics.markdown_confusion(score["open"]["confusion"], labels=list(EMOTIONS))]
    return "\n".join(parts)
