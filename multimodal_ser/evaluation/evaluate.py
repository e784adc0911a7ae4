"""``mser evaluate``: stage 1 (:func:`~multimodal_ser.evaluation.predict.predict_manifest`) then
stage 2 (:func:`~multimodal_ser.evaluation.compare.evaluate_predictions`) on a labelled manifest."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence

from ..labels import MODALITIES
from .compare import Comparison, evaluate_predictions
from .manifest import load_manifest
from .predict import item_groups, predict_manifest
from .report import write_report
from .splits import plan_folds

log = logging.getLogger(__name__)


def evaluate_manifest(
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    modalities: Sequence[str] = MODALITIES,
    folds: int = 5,
    seed: int = 0,
    by_group: bool = False,
    bootstrap: int = 1000,
    asr_model: str = "base",
    language: str | None = None,
    images_are_face_crops: bool = False,
    fps: float = 4.0,
    audio_head: str | os.PathLike | Mapping[str, str | os.PathLike] | None = None,
    text_head: str | os.PathLike | None = None,
    threads: int = 2,
    use_cache: bool = True,
    pack: bool = False,
    voice_reference: str = "none",
    progress: bool = True,
) -> Comparison:
    """``mser evaluate``: :func:`predict_manifest` then :func:`evaluate_predictions` (see both).

    Returns:
        The content of ``metrics.json`` (also written, with ``metrics.md`` and ``comparison.png``,
        into ``out_dir``), including ``manifest`` and the total ``runtime_s``.
    """
    began = time.monotonic()
    table, _ = load_manifest(manifest)  # cheap: say how the groups will be used before any encoding
    groups = item_groups(table)
    used, note = plan_folds(len(set(groups)), folds)
    log.info("%d items, %d groups: %s", len(table), len(set(groups)), note or f"{used}-fold group cross-fitting")
    predictions = predict_manifest(
        manifest, modalities=modalities, asr_model=asr_model, language=language, images_are_face_crops=images_are_face_crops,
        fps=fps, audio_head=audio_head, text_head=text_head, threads=threads, use_cache=use_cache, pack=pack,
        voice_reference=voice_reference, progress=progress,
    )
    result = evaluate_predictions(predictions, out_dir, folds=folds, seed=seed, by_group=by_group, bootstrap=bootstrap)
    result["manifest"] = predictions.model_ids.get("manifest")
    result["runtime_s"] = round(time.monotonic() - began, 1)
    write_report(result, out_dir)
    return result
