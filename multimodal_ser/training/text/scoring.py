"""Scores of predicted emotion and sentiment labels against a set's labels."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, recall_score

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
