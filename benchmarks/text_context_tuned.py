"""Does dialogue context help a text encoder fine-tuned on the dialogue? Measured on MELD.

    .venv/bin/python benchmarks/text_context_tuned.py --data ../shared/data [--turns 0 3] [--encoder mpnet] [--layers 6] [--int8]

The sibling of ``text_context.py``, which adds context to frozen sentence embeddings. Here the
encoder itself reads the context: each utterance is one token sequence ``[CLS] turn-k [SEP] ...
turn-1 [SEP] utterance [SEP]`` (the k preceding turns of its dialogue, at most
:data:`CONTEXT_TOKENS` tokens of them, nearest kept), and the sentence vector is the mean of the
states of ``[CLS]``, the utterance's tokens and the last ``[SEP]``, so the context shapes the
utterance's states through attention but is not averaged in. With k = 0 this is exactly how the
package reads a text.

For each k: the encoder (``--encoder``: ``minilm``, all-MiniLM-L6-v2 as the package loads it; ``mpnet``,
all-mpnet-base-v2 joined from its packages; or a sentence-transformers folder; ``--layers`` keeps only
its first layers) and a new head are fine-tuned together on MELD train less the
validation dialogues (the recipe of ``training/text/finetune.py``: its epochs, learning rates,
batches of like length, warm-up; seed 0), scored on the validation dialogues twice an epoch, and the
state with the best mean of MELD validation emotion and sentiment weighted-F1 is kept. Then, once,
each kept state is scored on MELD dev (emotion and sentiment weighted-F1, 95% intervals from
resampling whole dialogues), with the paired difference of each k against k = 0, and the encoder's
time per utterance of MELD dev (the first 200, batches of 32 of like length, best of 3). With
``--int8`` the kept encoder then runs in int8 as a packaged head would (smoothed by its input ranges on
1024 of the training utterances, :mod:`multimodal_ser.int8_encoder`) and dev is scored and timed again. Prints Markdown. About 4 min (MiniLM), 28 min
(mpnet) and 15 min (its first 6 layers) without context, 13 min (MiniLM) with three turns, on 2 cores.
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from text_context import _with_interval
from torch import nn
from tqdm.auto import tqdm

from multimodal_ser.evaluation import metrics
from multimodal_ser.heads import MLPHead
from multimodal_ser.labels import EMOTIONS, SENTIMENTS
from multimodal_ser.sentence_encoder import SentenceEncoder
from multimodal_ser.training.install import KeepBest
from multimodal_ser.training.text import finetune, load_meld, meld_validation_dialogues
from multimodal_ser.training.text.corpora import TextSet
from multimodal_ser.training.text.head import HIDDEN
from multimodal_ser.training.text.scoring import evaluate_predictions
from multimodal_ser.training.text.train import training_encoder

logger = logging.getLogger("text_context_tuned")

CONTEXT_TOKENS = 96
"""Most tokens of preceding turns read before an utterance (the nearest are kept)."""


def sequences(encoder: SentenceEncoder, data: TextSet, turns: int) -> list[tuple[list[int], int]]:
    """Per utterance of ``data`` (in dialogue order): ``(token ids, tokens of context)``, the
    context being up to ``turns`` preceding utterances of the same dialogue, each closed by [SEP]."""
    tokenizer = encoder.tokenizer
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    own = [ids[: encoder.max_seq_length - 2] for ids in tokenizer(data.texts, add_special_tokens=False)["input_ids"]]
    out = []
    for i, ids in enumerate(own):
        context: list[int] = []
        for j in range(i - 1, max(-1, i - 1 - turns), -1):
            if data.groups[j] != data.groups[i]:
                break
            context = own[j] + [sep] + context
        budget = min(CONTEXT_TOKENS, encoder.max_seq_length - 2 - len(ids))
        context = context[max(0, len(context) - budget):] if budget > 0 else []
        out.append(([cls, *context, *ids, sep], len(context)))
    return out


def pooled(encoder: SentenceEncoder, rows: list[tuple[list[int], int]]) -> torch.Tensor:
    """Unit sentence vectors ``(n, dim)`` of :func:`sequences` rows, the context left out of the mean."""
    longest = max(len(ids) for ids, _ in rows)
    input_ids = torch.zeros(len(rows), longest, dtype=torch.long)
    attention, pool = torch.zeros_like(input_ids), torch.zeros(len(rows), longest)
    for r, (ids, n_context) in enumerate(rows):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        attention[r, : len(ids)] = 1
        pool[r, 0] = 1.0
        pool[r, 1 + n_context : len(ids)] = 1.0
    states = encoder.model(input_ids=input_ids, attention_mask=attention).last_hidden_state
    vectors = (states * pool[..., None]).sum(dim=1) / pool.sum(dim=1, keepdim=True)
    return nn.functional.normalize(vectors, p=2, dim=1)


def predict(encoder: SentenceEncoder, head: MLPHead, rows: list) -> tuple[np.ndarray, np.ndarray]:
    """``(emotion, sentiment)`` label indices ``(n,)`` of :func:`sequences` rows."""
    encoder.model.eval()
    head.eval()
    order = np.argsort([len(ids) for ids, _ in rows], kind="stable")
    logits = torch.zeros(len(rows), len(EMOTIONS) + len(SENTIMENTS))
    with torch.inference_mode():
        for start in range(0, len(rows), 128):
            chosen = order[start : start + 128]
            logits[chosen] = head(pooled(encoder, [rows[i] for i in chosen]))
    encoder.model.train()
    head.train()
    k = len(EMOTIONS)
    return logits[:, :k].argmax(1).numpy(), logits[:, k:].argmax(1).numpy()


def ms_per_utterance(encoder: SentenceEncoder, rows: list, *, n: int = 200, batch: int = 32, repeats: int = 3) -> float:
    """Milliseconds per utterance to read the first ``n`` :func:`sequences` rows in batches of like length (best of ``repeats``)."""
    rows = rows[:n]
    order = np.argsort([len(ids) for ids, _ in rows], kind="stable")
    best = math.inf
    with torch.inference_mode():
        for _ in range(repeats):
            started = time.perf_counter()
            for start in range(0, len(rows), batch):
                pooled(encoder, [rows[i] for i in order[start : start + batch]])
            best = min(best, time.perf_counter() - started)
    return 1000 * best / len(rows)


def fine_tuned(train: TextSet, val: TextSet, turns: int, *, seed: int, encoder: SentenceEncoder) -> tuple[SentenceEncoder, MLPHead, dict]:
    """``encoder`` and a head fine-tuned on ``train`` read with ``turns`` of context, at their best state
    on ``val``; returns them and ``{"epoch", "score", "curve"}``."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    rows, val_rows = sequences(encoder, train, turns), sequences(encoder, val, turns)
    for name, parameter in encoder.model.named_parameters():
        parameter.requires_grad = name.startswith("encoder.layer.")
    head = MLPHead(encoder.dim, len(EMOTIONS) + len(SENTIMENTS), hidden=HIDDEN, dropout=finetune.DROPOUT)
    with torch.no_grad():
        x0 = torch.cat([pooled(encoder, rows[i : i + 128]) for i in range(0, min(len(rows), 4096), 128)])
    head.mean.copy_(x0.mean(dim=0))
    head.std.copy_(x0.std(dim=0).clamp(min=1e-6))
    optimiser = torch.optim.AdamW(
        [{"params": [p for p in encoder.model.parameters() if p.requires_grad], "lr": finetune.ENCODER_LEARNING_RATE},
         {"params": head.parameters(), "lr": finetune.HEAD_LEARNING_RATE}],
        weight_decay=finetune.WEIGHT_DECAY,
    )
    steps_per_epoch = math.ceil(len(rows) / finetune.BATCH_SIZE)
    total = steps_per_epoch * finetune.EPOCHS
    warmup = max(1, int(finetune.WARMUP * total))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: min(1.0, (step + 1) / warmup) * max(0.0, (total - step) / max(1, total - warmup))
    )
    emotion, sentiment = torch.from_numpy(train.emotion), torch.from_numpy(train.sentiment)
    lengths = np.array([len(ids) for ids, _ in rows])
    both = nn.ModuleDict({"encoder": encoder.model, "head": head})
    best = KeepBest(both, higher_is_better=True)
    evaluate_every, step, curve, started = math.ceil(steps_per_epoch / finetune.EVALS_PER_EPOCH), 0, [], time.monotonic()
    both.train()
    with tqdm(total=total, desc=f"fine-tuning, {turns} turns of context", unit="batch") as bar:
        for _ in range(finetune.EPOCHS):
            for batch in finetune.length_batches(lengths, rng):
                index = torch.from_numpy(batch)
                logits = head(pooled(encoder, [rows[i] for i in batch]))
                loss = -(emotion[index] * torch.log_softmax(logits[:, : len(EMOTIONS)], dim=1)).sum(dim=1)
                loss = loss + nn.functional.cross_entropy(logits[:, len(EMOTIONS):], sentiment[index], ignore_index=-1, reduction="none")
                optimiser.zero_grad()
                loss.mean().backward()
                optimiser.step()
                schedule.step()
                step += 1
                bar.update()
                if step % evaluate_every == 0 or step == total:
                    scored = evaluate_predictions(val, *predict(encoder, head, val_rows))
                    e, s = scored["emotion"]["weighted_f1"], scored["sentiment"]["weighted_f1"]
                    point = {"epoch": round(step / steps_per_epoch, 2), "emotion": round(e, 4), "sentiment": round(s, 4),
                             "minutes": round((time.monotonic() - started) / 60, 1)}
                    curve.append(point)
                    logger.info("%d turns: %s", turns, point)
                    best.update(step, (e + s) / 2, point)
    best.restore()
    both.eval()
    return encoder, head, {**best.info, "curve": curve}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A sentence encoder fine-tuned on MELD with and without preceding turns as context.")
    parser.add_argument("--data", type=Path, required=True, help="folder with meld/")
    parser.add_argument("--turns", type=int, nargs="+", default=[0, 3], help="preceding turns read (0 = none; the first is the reference)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--encoder", default="minilm", help="minilm (default), mpnet or a sentence-transformers folder to fine-tune")
    parser.add_argument("--layers", type=int, help="keep only the encoder's first layers (default: all)")
    parser.add_argument("--int8", action="store_true", help="also score and time each kept encoder quantised to int8")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    meld, dev = load_meld(args.data, "train"), load_meld(args.data, "dev")
    in_val = np.isin(meld.groups, meld_validation_dialogues(meld.groups, seed=args.seed))
    train, val = meld.subset(~in_val, "meld/train-fit"), meld.subset(in_val, "meld/train-val")
    truth = {"emotion": (dev.emotion.argmax(1), EMOTIONS), "sentiment": (dev.sentiment, SENTIMENTS)}
    preds, kept, int8, speed = {}, {}, {}, {}
    for turns in args.turns:
        start = training_encoder(args.encoder, layers=args.layers)
        encoder, head, kept[turns] = fine_tuned(train, val, turns, seed=args.seed, encoder=start)
        dev_rows = sequences(encoder, dev, turns)
        emotion, sentiment = predict(encoder, head, dev_rows)
        preds[turns] = {"emotion": emotion, "sentiment": sentiment}
        speed[turns] = {"float32": ms_per_utterance(encoder, dev_rows)}
        if args.int8:
            drawn = np.sort(np.random.default_rng(args.seed).choice(len(train), min(1024, len(train)), replace=False))
            encoder.quantise(encoder.int8_calibration([train.texts[i] for i in drawn]))
            emotion, sentiment = predict(encoder, head, dev_rows)
            int8[turns] = {"emotion": emotion, "sentiment": sentiment}
            speed[turns]["int8"] = ms_per_utterance(encoder, dev_rows)
    print("| preceding turns read | state kept (epoch) | MELD val emotion / sentiment wF1 | MELD dev emotion weighted-F1 | MELD dev sentiment weighted-F1 | encoder ms per utterance |")
    print("|---|---|---|---|---|---|")
    for turns in args.turns:
        info = kept[turns]
        for weights, predicted in (("", preds[turns]), (", int8", int8.get(turns))):
            if predicted is None:
                continue
            cells = [_with_interval(t, predicted[k], labels, metrics.weighted_f1, dev.groups) for k, (t, labels) in truth.items()]
            ms = speed[turns]["int8" if weights else "float32"]
            print(f"| {turns}{weights} | {info['epoch']} | {info['emotion']:.3f} / {info['sentiment']:.3f} | {' | '.join(cells)} | {ms:.1f} |")
    reference = args.turns[0]
    for turns in args.turns[1:]:
        cells = []
        for k, (t, labels) in truth.items():
            diff, (low, high) = metrics.paired_difference(
                [labels[i] for i in t], [labels[i] for i in preds[turns][k]], [labels[i] for i in preds[reference][k]],
                labels=labels, groups=dev.groups, metric=metrics.weighted_f1,
            )
            cells.append(f"{diff:+.3f} [{low:+.3f}, {high:+.3f}]")
        print(f"| {turns} − {reference} (paired) | | | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
