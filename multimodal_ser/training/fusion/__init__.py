"""Training the fusions, along the data flow: the data (:mod:`.data`: a mixed manifest and voice heads
cross-fitted by actor) → the default late fusion (:mod:`.late`) and the attention fusion
(:mod:`.attention`) → reproducing both packaged files (:mod:`.packaged`)."""

from .attention import DEFAULT_OUT, train_fusion
from .data import cross_fitted_voice_heads, packaged_training_manifest
from .late import fit_default_fusion, informative_modalities, train_default_fusion
from .packaged import train_packaged_fusion

__all__ = [
    "DEFAULT_OUT", "cross_fitted_voice_heads", "fit_default_fusion", "informative_modalities", "packaged_training_manifest",
    "train_default_fusion", "train_fusion", "train_packaged_fusion",
]
