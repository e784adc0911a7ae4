"""The lexicon baseline scored beside the head on the same held-out sets.

VADER's compound score for sentiment (the authors' thresholds +-0.05) and NRC emotion-word counts
for emotion (the lexicon that the ``nrclex`` wheel ships, read as JSON; a text with no NRC emotion
word is neutral).
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import metadata, resources

import numpy as np

from ...labels import EMOTIONS, SENTIMENTS
from .corpora import TextSet
from .scoring import evaluate_predictions

VADER_THRESHOLD = 0.05
"""VADER authors' compound-score thresholds: >= +t positive, <= -t negative, else neutral."""

NRC_TO_EMOTION: dict[str, str] = {
    "anger": "angry", "disgust": "disgust", "fear": "fearful", "joy": "happy", "sadness": "sad",
    "surprise": "surprised",
}
"""The NRC lexicon's Ekman categories (its anticipation, trust, positive and negative are unused)."""

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


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
