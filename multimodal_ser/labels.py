"""The shared label space and the maps from each dataset's names into it.

Every branch reports probabilities over :data:`EMOTIONS`, in this order, so that
fusion is a column-wise operation.
"""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")
"""Ekman's six basic emotions plus neutral; the column order of every probability table."""

SENTIMENTS: tuple[str, ...] = ("negative", "neutral", "positive")

MODALITIES: tuple[str, ...] = ("audio", "text", "face")

RAVDESS_EMOTIONS: dict[str, str] = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
"""RAVDESS filename code (third field) to its own 8 emotion names."""

RAVDESS_8: tuple[str, ...] = tuple(RAVDESS_EMOTIONS.values())
"""RAVDESS's own 8 classes, for the 8-class result that published work reports."""

_ALIASES: dict[str, str] = {
    # RAVDESS
    "calm": "neutral",
    # GoEmotions (Ekman), MELD, DAIR
    "joy": "happy",
    "sadness": "sad",
    "anger": "angry",
    "fear": "fearful",
    "surprise": "surprised",
    # FER2013
    "happiness": "happy",
    # CREMA-D codes
    "neu": "neutral",
    "hap": "happy",
    "sad": "sad",
    "ang": "angry",
    "fea": "fearful",
    "dis": "disgust",
}


def to_shared_label(name: str) -> str:
    """Map a dataset's emotion name (any case) onto :data:`EMOTIONS`.

    Raises:
        ValueError: if the name has no counterpart in the shared label space
            (for example DAIR's ``love``).
    """
    key = name.strip().lower()
    label = _ALIASES.get(key, key)
    if label not in EMOTIONS:
        raise ValueError(f"emotion {name!r} has no counterpart in {EMOTIONS}")
    return label
