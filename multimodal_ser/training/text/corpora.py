"""The text corpora (GoEmotions, MELD, DAIR emotion) as labelled sets in the package's label space.

- GoEmotions, Ekman labels (Reddit comments). A comment with several labels is kept as a soft
  target that splits its mass equally over its labels (about 9% of rows); evaluation uses the
  single-label rows (the 7-class problem), and also reports "any-of" accuracy over all rows.
  Sentiment comes from the 27 original labels through the GoEmotions authors' own sentiment
  grouping (:data:`GOEMOTIONS_SENTIMENT`): a comment whose labels all fall in one group
  (positive, negative, or only ``neutral``) gets that sentiment; ambiguous or mixed ones get none.
- MELD (TV dialogue): 7 emotions and real sentiment labels.
- DAIR emotion (short English sentences): ``love`` is mapped to ``happy``, following GoEmotions'
  own Ekman grouping, which puts love under joy. DAIR gets no sentiment label (it has no neutral
  class, so a derived sentiment would teach "never neutral").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ...labels import EMOTIONS, SENTIMENTS, to_shared_label

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


def one_hot(labels: list[str]) -> np.ndarray:
    """float32 ``(n, 7)``: one-hot rows over EMOTIONS of shared label names."""
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
        one_hot([to_shared_label(e) for e in table["Emotion"]]),
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
    return TextSet(f"dair/{split}", texts, one_hot(labels), np.full(len(texts), -1, dtype=np.int64))


def meld_validation_dialogues(dialogue_ids: np.ndarray, *, seed: int) -> list[int]:
    """The MELD train dialogues held out for validation: :data:`MELD_VALIDATION_FRACTION` of the
    distinct ids in ``dialogue_ids`` (``(n,)`` int), drawn with ``seed``, sorted."""
    dialogues = np.unique(dialogue_ids)
    n_val = round(MELD_VALIDATION_FRACTION * len(dialogues))
    return sorted(np.random.default_rng(seed).permutation(dialogues)[:n_val].tolist())


def check_data_dir(data_dir: Path) -> None:
    """Raises FileNotFoundError naming the :data:`REQUIRED_FILES` missing under ``data_dir``."""
    missing = [f for f in REQUIRED_FILES if not (Path(data_dir) / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{data_dir}: expected the shared text corpora; missing {missing}")
