"""Fitting one text head: an MLP on frozen embeddings with 7 emotion + 3 sentiment outputs.

Imbalance (MELD is 47% neutral, GoEmotions' fear and disgust are about 1.5% each) is handled by
class weights of the cross-entropy (``frequency ** -alpha``); alpha, the weight of MELD's rows and
whether DAIR is trained on are searched on validation data (:data:`SEARCH_SPACE`), with the score
of :func:`validation_score`, which averages macro-F1 (GoEmotions) with weighted-F1 (MELD), so
neither the majority nor the rare classes alone drive the choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ...heads import MLPHead
from ...labels import EMOTIONS, SENTIMENTS
from ..install import KeepBest
from .corpora import TextSet
from .scoring import evaluate_predictions

HIDDEN = 512
DROPOUT = 0.3
LEARNING_RATE = 1e-3
WEIGHT_DECAY = 1e-4
BATCH_SIZE = 256
MAX_EPOCHS = 40
PATIENCE = 4
SEARCH_SPACE: dict[str, tuple] = {
    "alpha": (0.0, 0.5, 1.0),  # class weight = frequency ** -alpha (0: none, 1: fully balanced)
    "meld_weight": (1.0, 3.0),  # per-sample weight of MELD rows (the conversational domain)
    "use_dair": (False, True),
}
"""Hyper-parameters chosen on the validation split (full grid)."""


def class_weights(targets: np.ndarray, *, alpha: float) -> np.ndarray:
    """``frequency ** -alpha`` per class, scaled so that the mean weight per sample is 1.

    Args:
        targets: ``(n, k)`` target distributions (one-hot or soft).
    """
    mass = targets.sum(axis=0).astype(np.float64)
    freq = mass / mass.sum()
    weights = np.where(freq > 0, np.maximum(freq, 1e-12) ** -alpha, 0.0)
    return (weights / (freq * weights).sum()).astype(np.float32)


@dataclass
class Tensors:
    """A training set as tensors: stacked embeddings, targets and per-row weights."""

    x: torch.Tensor  # (n, d) float32 embeddings
    emotion: torch.Tensor  # (n, 7) float32 targets
    sentiment: torch.Tensor  # (n,) int64, -1 = none
    weight: torch.Tensor  # (n,) float32 per-sample weight


def predict(head: MLPHead, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(emotion, sentiment) predicted indices, each ``(n,)``."""
    head.eval()
    with torch.inference_mode():
        logits = head(x)
    k = len(EMOTIONS)
    return logits[:, :k].argmax(dim=1).numpy(), logits[:, k:].argmax(dim=1).numpy()


def validation_score(head: MLPHead, val: dict[str, tuple[TextSet, torch.Tensor]]) -> tuple[float, dict]:
    """Selection score: mean of GoEmotions-dev macro-F1, MELD-validation emotion weighted-F1 and
    MELD-validation sentiment weighted-F1 (the held-out metrics' counterparts)."""
    parts = {}
    for name, (data, x) in val.items():
        parts[name] = evaluate_predictions(data, *predict(head, x))
    components = {
        "goemotions_macro_f1": parts["goemotions"]["emotion"]["macro_f1"],
        "meld_weighted_f1": parts["meld"]["emotion"]["weighted_f1"],
        "meld_sentiment_weighted_f1": parts["meld"]["sentiment"]["weighted_f1"],
    }
    return float(np.mean(list(components.values()))), components


def fit_head(
    train: Tensors,
    val: dict[str, tuple[TextSet, torch.Tensor]],
    *,
    alpha: float,
    seed: int,
) -> tuple[MLPHead, dict]:
    """Train one head with early stopping on :func:`validation_score`; returns the best epoch's head."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    head = MLPHead(train.x.shape[1], len(EMOTIONS) + len(SENTIMENTS), hidden=HIDDEN, dropout=DROPOUT)
    head.mean.copy_(train.x.mean(dim=0))
    head.std.copy_(train.x.std(dim=0).clamp(min=1e-6))
    emotion_w = torch.from_numpy(class_weights(train.emotion.numpy(), alpha=alpha))
    labelled = train.sentiment >= 0
    sentiment_w = torch.from_numpy(
        class_weights(np.eye(len(SENTIMENTS), dtype=np.float32)[train.sentiment[labelled].numpy()], alpha=alpha)
    )
    optimiser = torch.optim.AdamW(head.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    k = len(EMOTIONS)
    best = KeepBest(head, higher_is_better=True, patience=PATIENCE)
    for epoch in range(1, MAX_EPOCHS + 1):
        head.train()
        for idx in torch.randperm(len(train.x), generator=generator).split(BATCH_SIZE):
            logits = head(train.x[idx])
            target = train.emotion[idx]
            log_p = torch.log_softmax(logits[:, :k], dim=1)
            emotion_loss = -(target * log_p).sum(dim=1) * (target @ emotion_w)
            sentiment_loss = nn.functional.cross_entropy(  # 0 where a text has no sentiment label
                logits[:, k:], train.sentiment[idx], weight=sentiment_w, ignore_index=-1, reduction="none"
            )
            loss = ((emotion_loss + sentiment_loss) * train.weight[idx]).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        score, components = validation_score(head, val)
        if best.update(epoch, score, components):
            break
    best.restore()
    head.eval()
    summary = {"score": best.best, "epoch": best.epoch, "epochs_run": epoch, **best.info}
    return head, {key: round(v, 4) if isinstance(v, float) else v for key, v in summary.items()}


def stack(sets: list[tuple[TextSet, np.ndarray, float]]) -> Tensors:
    """One :class:`Tensors` of ``(set, embeddings (n, d), row weight)`` parts, in order."""
    return Tensors(
        x=torch.from_numpy(np.concatenate([e for _, e, _ in sets])),
        emotion=torch.from_numpy(np.concatenate([s.emotion for s, _, _ in sets])),
        sentiment=torch.from_numpy(np.concatenate([s.sentiment for s, _, _ in sets])),
        weight=torch.from_numpy(np.concatenate([np.full(len(s), w, dtype=np.float32) for s, _, w in sets])),
    )
