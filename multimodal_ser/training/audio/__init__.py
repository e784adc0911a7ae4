"""Training and honest evaluation of the voice head (``mser train audio``, ``mser crossval``).

The modules follow the data: :mod:`.corpus` (which clips, what their labels say, how they are laid
out in encoder windows), :mod:`.conditions` (noise, telephone and other versions of the audio),
:mod:`.features` (one encoder pass per window, cached), :mod:`.head` (fitting with partial label
spaces), :mod:`.crossval` (speaker-disjoint folds and leave one corpus out), :mod:`.train` (the
shipped head and its card).
"""

from .conditions import CLEAN, ISOLATED, Condition, telephone_channel
from .corpus import CORPORA, Corpus, corpus_folders, isolated_windows, label_sets, pack_windows, render_window, training_manifest
from .crossval import cross_validate_audio, leave_one_corpus_out, speaker_folds
from .features import ENCODER_NAME, extract_features
from .head import RECIPE, HeadRecipe, augment_conditions, fit_head, head_config, predict_head, training_rows
from .train import train_audio_head

__all__ = [
    "CLEAN", "CORPORA", "ENCODER_NAME", "ISOLATED", "RECIPE", "Condition", "Corpus", "corpus_folders", "HeadRecipe", "augment_conditions",
    "cross_validate_audio", "extract_features", "fit_head", "head_config", "isolated_windows", "label_sets",
    "leave_one_corpus_out", "pack_windows", "predict_head", "render_window", "speaker_folds", "telephone_channel",
    "train_audio_head", "training_manifest", "training_rows",
]
