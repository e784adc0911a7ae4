"""Training the packaged text head on real corpora (``mser train text``), with a lexicon baseline.

The modules follow the data: :mod:`.corpora` (the labelled sets), :mod:`.embeddings` (the frozen
encoder's vectors, cached), :mod:`.head` (fitting one head on them, the hyper-parameter search space)
or :mod:`.finetune` (fine-tuning the encoder with the head: the packaged head),
:mod:`.scoring` and :mod:`.lexicon` (held-out scores, the baseline), :mod:`.train` (the run) and
:mod:`.card` (its model card, from ``card.md``).
"""

from .corpora import (
    DAIR_ALIASES,
    GOEMOTIONS_SENTIMENT,
    MELD_VALIDATION_FRACTION,
    REQUIRED_FILES,
    TextSet,
    check_data_dir,
    load_dair,
    load_goemotions,
    load_meld,
    meld_validation_dialogues,
)
from .embeddings import embed_cached
from .head import SEARCH_SPACE, Tensors, class_weights, fit_head, predict, stack, validation_score
from .lexicon import LexiconBaseline
from .scoring import evaluate_predictions, scores
from .train import train_text_head

__all__ = [
    "DAIR_ALIASES", "GOEMOTIONS_SENTIMENT", "MELD_VALIDATION_FRACTION", "REQUIRED_FILES", "SEARCH_SPACE", "LexiconBaseline",
    "Tensors", "TextSet", "check_data_dir", "class_weights", "embed_cached", "evaluate_predictions", "fit_head",
    "load_dair", "load_goemotions", "load_meld", "meld_validation_dialogues", "predict", "scores", "stack", "train_text_head",
    "validation_score",
]
