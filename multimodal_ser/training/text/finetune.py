"""Fine-tuning the sentence encoder together with the text head (``mser train text --encoder minilm-tuned``
or ``mpnet-tuned``).

The encoder's transformer layers (all six of all-MiniLM-L6-v2, or those kept of all-mpnet-base-v2)
are trained with the head on the same rows and losses as a head on frozen embeddings
(:func:`.head.fit_head`: soft emotion targets, sentiment where labelled, per-row weights); its word
embeddings stay frozen, which keeps the tuned tensors small. The text is
read exactly as in use (:meth:`~multimodal_ser.sentence_encoder.SentenceEncoder.pooled`: mean of
the token states, L2-normalised). AdamW, a linear warm-up over :data:`WARMUP` of the steps and a
linear decay to zero; batches of like length (little padding). The validation score of
:func:`.head.validation_score` is taken :data:`EVALS_PER_EPOCH` times an epoch and the best state is
kept. :func:`compact` then gives the tuned weights the form the head file stores.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ...heads import MLPHead
from ...labels import EMOTIONS, SENTIMENTS
from ...sentence_encoder import LowRankDelta, SentenceEncoder
from ..install import KeepBest
from .corpora import TextSet
from .head import HIDDEN, validation_score

logger = logging.getLogger(__name__)

EPOCHS = 3
ENCODER_LEARNING_RATE = 4e-5
HEAD_LEARNING_RATE = 1e-3
WEIGHT_DECAY = 0.01
BATCH_SIZE = 32
DROPOUT = 0.1
WARMUP = 0.06
"""share of the steps over which the learning rates rise linearly from zero."""
EVALS_PER_EPOCH = 2
LENGTH_POOL = 50
"""batches drawn at random together, then cut by text length (so a batch pads little)."""
DELTA_RANK = 80
"""Rank of the stored change to each tuned weight matrix (:func:`compact`, int8 factors): the six
layers' 36 matrices take 3.3 MB instead of 21 MB as whole float16 tensors. On the validation texts
(GoEmotions dev, MELD train-val; no labels read) the packaged head's emotion labels through the
stored weights agreed with those through the whole float16 weights on 98.4% of texts (rank 32 in
float16, the same size as rank 64 in int8: 96.0% and 98.0%; rank 96: 98.7%, 128: 99.2%). For the first
10 layers of all-mpnet-base-v2 (60 matrices, 768 wide; a 12.9 MB head) the validation score through the
stored weights was 0.637 against 0.638 through the tuned ones."""


@dataclass
class TextRows:
    """Training rows: texts with their targets and per-row weights, and what an epoch reads of them."""

    texts: list[str]
    emotion: torch.Tensor  # (n, 7) float32 target distributions
    sentiment: torch.Tensor  # (n,) int64, -1 = none
    weight: torch.Tensor  # (n,) float32, mean 1 over the rows an epoch reads
    parts: list[tuple[np.ndarray, int | None]]
    """Each part's row indices and how many of them an epoch draws afresh (None: all, every epoch)."""

    def epoch(self, rng: np.random.Generator) -> np.ndarray:
        """One epoch's row indices, part by part: all of a part's rows, or a fresh draw without replacement."""
        return np.concatenate([rows if n is None else rng.choice(rows, n, replace=False) for rows, n in self.parts])

    @property
    def epoch_size(self) -> int:
        """Rows an epoch reads."""
        return sum(len(rows) if n is None else n for rows, n in self.parts)


def text_rows(sets: list[tuple[TextSet, float, int | None]]) -> TextRows:
    """One :class:`TextRows` of ``(set, row weight, rows drawn per epoch or None for all)`` parts, in order.

    A part drawn in part keeps its share of an epoch's loss: its row weight is scaled by
    ``len(set) / drawn``. Weights are then scaled so that an epoch's rows average 1.
    """
    starts = np.cumsum([0] + [len(s) for s, _, _ in sets])
    parts = [(np.arange(a, b), n if n is not None and n < b - a else None) for (a, b), (_, _, n) in zip(itertools.pairwise(starts), sets)]
    weights = [w * (len(s) / n if n is not None else 1.0) for (s, w, _), (_, n) in zip(sets, parts)]
    read = [len(rows) if n is None else n for rows, n in parts]
    mean = sum(w * k for w, k in zip(weights, read)) / sum(read)
    return TextRows(
        texts=[t for s, _, _ in sets for t in s.texts],
        emotion=torch.from_numpy(np.concatenate([s.emotion for s, _, _ in sets])),
        sentiment=torch.from_numpy(np.concatenate([s.sentiment for s, _, _ in sets])),
        weight=torch.from_numpy(np.concatenate([np.full(len(s), w / mean, dtype=np.float32) for (s, _, _), w in zip(sets, weights)])),
        parts=parts,
    )


def length_batches(lengths: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch's batches of row indices (``lengths``: tokens per row, ``(n,)``): rows shuffled,
    each pool of :data:`LENGTH_POOL` batches sorted by length and cut, the batches shuffled."""
    order = rng.permutation(len(lengths))
    batches = []
    for first in range(0, len(order), BATCH_SIZE * LENGTH_POOL):
        pool = order[first : first + BATCH_SIZE * LENGTH_POOL]
        pool = pool[np.argsort(lengths[pool], kind="stable")]
        batches += [pool[i : i + BATCH_SIZE] for i in range(0, len(pool), BATCH_SIZE)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _embedded(encoder: SentenceEncoder, val: dict[str, TextSet]) -> dict[str, tuple[TextSet, torch.Tensor]]:
    encoder.model.eval()
    embedded = {name: (data, torch.from_numpy(encoder.encode(data.texts, batch_size=128))) for name, data in val.items()}
    encoder.model.train()
    return embedded


def fine_tune(encoder: SentenceEncoder, train: TextRows, val: dict[str, TextSet], *, seed: int) -> tuple[MLPHead, dict, dict]:
    """Fine-tune ``encoder`` (in place) with a new head; both end at their best validation state.

    Args:
        encoder: a :class:`SentenceEncoder` (all-MiniLM-L6-v2 for the packaged head).
        train: the training rows; each epoch reads :meth:`TextRows.epoch` of them.
        val: ``{"goemotions": ..., "meld": ...}`` validation sets (see :func:`.head.validation_score`).
        seed: seeds the head's initialisation, dropout and the batch order.

    Returns:
        ``(head, tuned, result)``: the head; the tuned encoder tensors by ``state_dict`` key (every
        trained one, float32); the best validation ``score`` with its components, the ``step`` and
        ``epoch`` it came at, and ``curve`` (every evaluation).
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = encoder.model
    for name, parameter in model.named_parameters():  # the transformer layers; not the embeddings, nor the unused pooler
        parameter.requires_grad = name.startswith("encoder.layer.")
    tuned_names = [name for name, p in model.named_parameters() if p.requires_grad]
    lengths = encoder.tokens(train.texts)["attention_mask"].sum(dim=1).numpy()  # tokens per row, as the encoder reads it
    x0 = torch.from_numpy(encoder.encode(train.texts[:: max(1, len(train.texts) // 4096)], batch_size=128))
    head = MLPHead(encoder.dim, len(EMOTIONS) + len(SENTIMENTS), hidden=HIDDEN, dropout=DROPOUT)
    head.mean.copy_(x0.mean(dim=0))
    head.std.copy_(x0.std(dim=0).clamp(min=1e-6))
    optimiser = torch.optim.AdamW(
        [{"params": [p for p in model.parameters() if p.requires_grad], "lr": ENCODER_LEARNING_RATE},
         {"params": head.parameters(), "lr": HEAD_LEARNING_RATE}],
        weight_decay=WEIGHT_DECAY,
    )
    steps_per_epoch = math.ceil(train.epoch_size / BATCH_SIZE)
    total, warmup = steps_per_epoch * EPOCHS, max(1, int(WARMUP * steps_per_epoch * EPOCHS))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min(1.0, (step + 1) / warmup) * max(0.0, (total - step) / max(1, total - warmup))
    )
    both = nn.ModuleDict({"encoder": model, "head": head})
    best = KeepBest(both, higher_is_better=True)
    evaluate_every = math.ceil(steps_per_epoch / EVALS_PER_EPOCH)
    k, step, curve, started = len(EMOTIONS), 0, [], time.monotonic()
    both.train()
    with tqdm(total=total, desc="fine-tuning the text encoder", unit="batch") as bar:
        for _ in range(EPOCHS):
            epoch_rows = train.epoch(rng)
            for batch in length_batches(lengths[epoch_rows], rng):
                rows = epoch_rows[batch]
                index = torch.from_numpy(rows)
                logits = head(encoder.pooled(encoder.tokens([train.texts[i] for i in rows])))
                target = train.emotion[index]
                emotion_loss = -(target * torch.log_softmax(logits[:, :k], dim=1)).sum(dim=1)
                sentiment_loss = nn.functional.cross_entropy(logits[:, k:], train.sentiment[index], ignore_index=-1, reduction="none")
                loss = ((emotion_loss + sentiment_loss) * train.weight[index]).mean()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                step += 1
                bar.update()
                if step % evaluate_every == 0 or step == total:
                    head.eval()
                    score, components = validation_score(head, _embedded(encoder, val))
                    head.train()
                    point = {"step": step, "epoch": round(step / steps_per_epoch, 2), "score": round(score, 4),
                             **{key: round(v, 4) for key, v in components.items()}, "minutes": round((time.monotonic() - started) / 60, 1)}
                    curve.append(point)
                    logger.info("fine-tuning: %s", point)
                    best.update(step, score, point)
    best.restore()
    both.eval()
    tuned = {name: tensor.detach().clone() for name, tensor in model.state_dict().items() if name in tuned_names}
    return head, tuned, {**best.info, "curve": curve}


def compact(tuned: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | LowRankDelta]:
    """The tuned weights as a head file stores them: each weight matrix as its rank-:data:`DELTA_RANK`
    change from ``base`` (the encoder's ``state_dict`` before fine-tuning) in int8, the rest (biases,
    layer norms) whole, rounded to float16 as stored."""
    return {
        key: LowRankDelta.between(value, base[key], DELTA_RANK).quantized() if value.ndim == 2 else value.half().float()
        for key, value in tuned.items()
    }
