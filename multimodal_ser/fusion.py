"""Fusion: one emotion distribution per segment from the modalities that are present.

Late fusion is a weighted log-linear pool: ``p(y) ∝ exp(Σ_m w_m · log p_m(y) / T)`` over the
modalities ``m`` present in the segment. A missing modality drops out of the sum (it is never
read as "neutral"); a segment with no modality present gets no label.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from .labels import EMOTIONS, MODALITIES

_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class LateFusion:
    """Reliability weights per modality and a temperature that calibrates the pooled confidence."""

    weights: dict[str, float] = dataclasses.field(default_factory=lambda: {m: 1.0 for m in MODALITIES})
    temperature: float = 1.0
    name: str = "late"

    def __post_init__(self):
        unknown = set(self.weights) - set(MODALITIES)
        if unknown:
            raise ValueError(f"fusion weights for unknown modalities {sorted(unknown)}; known: {MODALITIES}")
        if any(w < 0 for w in self.weights.values()):
            raise ValueError(f"fusion weights must be >= 0, not {self.weights}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, not {self.temperature}")

    def fuse(self, segments: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Pool the ``<m>_<label>`` columns of ``segments``.

        Returns:
            ``(probabilities (n, 7), present (n,))``; rows where no weighted modality is present
            are NaN with ``present`` False.
        """
        n = len(segments)
        logits = np.zeros((n, len(EMOTIONS)))
        present = np.zeros(n, dtype=bool)
        for m, w in self.weights.items():
            if w == 0 or f"{m}_present" not in segments:
                continue
            mask = segments[f"{m}_present"].to_numpy(dtype=bool)
            probs = segments[[f"{m}_{label}" for label in EMOTIONS]].to_numpy(dtype=np.float64)
            logits[mask] += w * np.log(np.clip(probs[mask], _EPS, 1.0))
            present |= mask
        logits /= self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        fused = np.exp(logits)
        fused /= fused.sum(axis=1, keepdims=True)
        fused[~present] = np.nan
        return fused, present

    def describe(self) -> dict:
        return {"fusion": self.name, "weights": dict(self.weights), "temperature": self.temperature}


def fused_columns(segments: pd.DataFrame, fusion: LateFusion) -> pd.DataFrame:
    """``label``, ``confidence``, ``fused_<label>`` and ``fused_from`` (the modalities pooled) per row."""
    probs, present = fusion.fuse(segments)
    best = np.argmax(np.nan_to_num(probs, nan=-1.0), axis=1) if len(segments) else np.zeros(0, dtype=int)
    out = pd.DataFrame(index=segments.index)
    out["label"] = pd.Series([EMOTIONS[i] if p else None for i, p in zip(best, present)], index=segments.index, dtype=object)
    out["confidence"] = np.where(present, probs[np.arange(len(best)), best] if len(best) else 0.0, np.nan)
    for j, label in enumerate(EMOTIONS):
        out[f"fused_{label}"] = probs[:, j]
    used = [m for m, w in fusion.weights.items() if w > 0 and f"{m}_present" in segments]
    out["fused_from"] = [
        "+".join(m for m in used if row[f"{m}_present"]) or None for _, row in segments[[f"{m}_present" for m in used]].iterrows()
    ]
    return out
