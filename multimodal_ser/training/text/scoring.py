"""Scores of predicted emotion and sentiment labels against a set's labels."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, recall_score

from ...evaluation import metrics
from ...labels import EMOTIONS, SENTIMENTS
from .corpora import TextSet


def scores(true: np.ndarray, pred: np.ndarray, names: tuple[str, ...]) -> dict:
    """Accuracy (``wa``), unweighted accuracy (``ua``: mean recall over the classes present in ``true``),
    macro- and weighted-F1 over those classes, per-class F1, and the confusion matrix
    (rows true, columns predicted, in ``names`` order).

    Args:
        true, pred: int ``(n,)`` indices into ``names``.
    """
    present = sorted(set(true.tolist()))
    return {
        "n": int(len(true)),
        "wa": float((true == pred).mean()),
        "ua": float(recall_score(true, pred, labels=present, average="macro", zero_division=0)),
        "macro_f1": float(f1_score(true, pred, labels=present, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(true, pred, labels=present, average="weighted", zero_division=0)),
        "f1": dict(
            zip(
                [names[i] for i in present],
                f1_score(true, pred, labels=present, average=None, zero_division=0).round(4).tolist(),
            )
        ),
        "labels": list(names),
        "confusion": confusion_matrix(true, pred, labels=list(range(len(names)))).tolist(),
    }


def evaluate_predictions(data: TextSet, emotion_pred: np.ndarray, sentiment_pred: np.ndarray) -> dict:
    """Scores of predicted label indices (``(n,)`` each) against a set's labels.

    Emotion is scored on single-label rows; ``any_of_wa`` counts a prediction right on every row
    when it is one of the row's labels. Sentiment is scored where the set has sentiment labels.
    """
    single = data.single_label
    result = {
        "emotion": scores(data.emotion[single].argmax(axis=1), emotion_pred[single], EMOTIONS),
        "emotion_any_of_wa": float((data.emotion[np.arange(len(data)), emotion_pred] > 0).mean()),
    }
    labelled = data.sentiment >= 0
    if labelled.any():
        result["sentiment"] = scores(data.sentiment[labelled], sentiment_pred[labelled], SENTIMENTS)
    return result


INTERVAL_METRICS = {"macro_f1": "macro", "weighted_f1": "weighted", "ua": "recall"}
"""The held-out scores given with a 95% bootstrap interval (``<name>_ci``), as :func:`scores` computes them."""


def _on_classes(kind: str, present: list[str]):
    """A metric for :func:`~multimodal_ser.evaluation.metrics.bootstrap_interval` averaged over the
    classes ``present`` in the whole set's labels, as :func:`scores` averages (not over those of
    each resample); from the confusion counts, as sklearn computes it with ``zero_division=0``."""
    def metric(y_true, y_pred, *, labels) -> float:
        index, k = {label: i for i, label in enumerate(labels)}, len(labels)
        t = np.fromiter((index[x] for x in y_true), dtype=np.int64, count=len(y_true))
        p = np.fromiter((index[x] for x in y_pred), dtype=np.int64, count=len(y_pred))
        confusion = np.bincount(t * k + p, minlength=k * k).reshape(k, k)
        hits, support, predicted = np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
        rows = [index[label] for label in present]
        if kind == "recall":
            return float(np.mean(np.divide(hits, support, out=np.zeros(k), where=support > 0)[rows]))
        f1 = np.divide(2 * hits, support + predicted, out=np.zeros(k), where=support + predicted > 0)[rows]
        if kind == "macro":
            return float(f1.mean())
        return float((f1 * support[rows]).sum() / max(support[rows].sum(), 1))
    return metric


def held_out_scores(data: TextSet, emotion_pred: np.ndarray, sentiment_pred: np.ndarray) -> dict:
    """:func:`evaluate_predictions` with 95% bootstrap intervals of :data:`INTERVAL_METRICS` for
    emotion and sentiment (1000 resamples; a set with dialogues resamples whole dialogues)."""
    result = evaluate_predictions(data, emotion_pred, sentiment_pred)
    rows = {"emotion": (data.single_label, data.emotion.argmax(axis=1), emotion_pred, EMOTIONS),
            "sentiment": (data.sentiment >= 0, data.sentiment, sentiment_pred, SENTIMENTS)}
    for task, (keep, true, pred, names) in rows.items():
        if task not in result:
            continue
        truth, guess = [names[i] for i in true[keep]], [names[i] for i in pred[keep]]
        present = sorted(set(truth), key=names.index)
        groups = None if data.groups is None else data.groups[keep]
        for name, kind in INTERVAL_METRICS.items():
            low, high = metrics.bootstrap_interval(truth, guess, _on_classes(kind, present), labels=names, groups=groups)
            result[task][f"{name}_ci"] = [round(low, 4), round(high, 4)]
    return result
