"""Fusion: one emotion distribution per segment from the modalities that are present.

- :mod:`~multimodal_ser.fusion.base`: the :class:`Fusion` interface, reading a modality's columns,
  and the fused columns of ``segments.parquet`` (label, confidence, runner-up, agreement, conflict);
- :mod:`~multimodal_ser.fusion.late`: the reliability-weighted log-linear pool of calibrated,
  prior-relative evidence, and its stacking;
- :mod:`~multimodal_ser.fusion.default`: the packaged default and ``load_fusion``;
- :mod:`~multimodal_ser.fusion.attention`: the cross-modal attention fusion, and
  :mod:`~multimodal_ser.fusion.attention_training` its training.
"""

from .attention import AttentionFusion, AttentionOptions, CrossModalAttention, load_attention_fusion
from .attention_training import fit_attention_fusion
from .base import (
    CONFLICT_AGREEMENT,
    EPS,
    TEMPERATURE_RANGE,
    Fusion,
    agreement,
    fused_columns,
    modality_probabilities,
    modality_quality,
    presence_patterns,
    softmax,
    targets,
    valid_modalities,
)
from .default import DEFAULT_PATH, load_fusion, packaged_default_kind
from .late import (
    LATE_FUSION_FORMAT,
    LATE_FUSION_VERSION,
    LateFusion,
    balanced_row_weights,
    evidence,
    fit_late_fusion,
    fit_temperature,
    load_late_fusion,
)

__all__ = [
    "CONFLICT_AGREEMENT",
    "DEFAULT_PATH",
    "EPS",
    "LATE_FUSION_FORMAT",
    "LATE_FUSION_VERSION",
    "TEMPERATURE_RANGE",
    "AttentionFusion",
    "AttentionOptions",
    "CrossModalAttention",
    "Fusion",
    "LateFusion",
    "agreement",
    "balanced_row_weights",
    "evidence",
    "fit_attention_fusion",
    "fit_late_fusion",
    "fit_temperature",
    "fused_columns",
    "load_attention_fusion",
    "load_fusion",
    "load_late_fusion",
    "modality_probabilities",
    "modality_quality",
    "packaged_default_kind",
    "presence_patterns",
    "softmax",
    "targets",
    "valid_modalities",
]
