"""Reproducing the packaged fusions from ``../shared/data`` (``mser train fusion --data DIR --out DIR``)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ...evaluation import predict_manifest
from ...files import atomic_output
from ...fusion import AttentionOptions
from .attention import DEFAULT_OUT, PACKAGED_NOTES, train_fusion
from .data import cross_fitted_voice_heads, packaged_training_manifest


def train_packaged_fusion(
    data_dir: str | os.PathLike,
    out_path: str | os.PathLike = DEFAULT_OUT,
    *,
    seed: int = 0,
    progress: bool = True,
    late_out: str | os.PathLike | None = None,
    late_only: bool = False,
    ravdess_text: str = "asr",
) -> dict:
    """Reproduce the packaged fusions from ``../shared/data`` (see :data:`PACKAGED_NOTES`).

    Builds :func:`packaged_training_manifest` (written to ``weights.cache_dir()/fusion-training``),
    trains the cross-fitted voice heads (:func:`cross_fitted_voice_heads`), runs every branch once
    per item (face crops for FER2013, English ASR), then learns the default late fusion
    (:func:`multimodal_ser.training.fusion.late.train_default_fusion`: ``late_out``, by default
    ``models/late_fusion.json``, and its card) and, unless ``late_only``, trains the attention
    fusion (:func:`train_fusion`) on the same predictions.

    Returns:
        ``{"late": train_default_fusion's summary, "attention": train_fusion's summary or None}``.
    """
    from ...files import cache_dir
    from ...fusion import DEFAULT_PATH
    from .late import train_default_fusion

    data_dir = Path(data_dir)
    manifest = packaged_training_manifest(data_dir, ravdess_text=ravdess_text)
    manifest_path = cache_dir() / "fusion-training" / f"packaged-seed{seed}-{ravdess_text}.csv"
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(manifest_path) as tmp:
        manifest.to_csv(tmp, index=False)
    heads = {f"ravdess-{g}": p for g, p in cross_fitted_voice_heads(data_dir, seed=seed).items()}
    predictions = predict_manifest(
        manifest_path, images_are_face_crops=True, audio_head=heads, language="en", progress=progress,
    )
    actors = sorted({g.removeprefix("ravdess-") for g, s in zip(manifest["group"], manifest["source"]) if s == "ravdess"})
    note = (
        f"`mser train fusion{' --late-only' if late_only else ''} --ravdess-text {ravdess_text} --data {data_dir}`: RAVDESS speech of actors {', '.join(actors)} (voice from heads "
        "cross-fitted by actor, so never an actor's own; words "
        + ("from ASR" if ravdess_text == "asr" else "= the sentence read, not ASR")
        + "), MELD dev (words only), FER2013 PrivateTest (face crops only). The text head's calibration was fitted on "
        "GoEmotions dev + MELD validation dialogues, the face head's on FER2013 PublicTest: neither saw these items."
    )
    late = train_default_fusion(
        predictions, out_path=Path(late_out) if late_out is not None else DEFAULT_PATH, seed=seed, data_note=note,
        attention_options=dataclasses.replace(AttentionOptions(), embeddings=("text", "face")),
    )
    attention = None
    if not late_only:
        attention = train_fusion(
            manifest_path, out_path, seed=seed, images_are_face_crops=True, audio_head=heads, language="en",
            notes=PACKAGED_NOTES, progress=progress, predictions=predictions,
        )
    return {"late": late, "attention": attention}


