"""Evaluation on labelled data (``mser evaluate``, ``mser manifest``), along its data flow:

    manifest.py, datasets.py   labelled manifests: the CSV contract and its reader; builders of known datasets
    items.py, cache.py         every branch once per item, its outputs cached on disk
    predict.py                 all items, voice heads and text model applied: Predictions
    splits.py                  group folds: no speaker on both sides of anything learned
    systems.py                 each modality alone and each fusion, cross-fitted
    compare.py                 every system scored (metrics.py): the comparison
    report.py                  metrics.json, metrics.md, comparison.png
    evaluate.py                evaluate_manifest: all of it from a manifest

The models come from :class:`multimodal_ser.registry.Models`, as in the pipeline.
"""

from .compare import Comparison, SystemScores, compare_predictions, evaluate_predictions
from .evaluate import evaluate_manifest
from .manifest import load_manifest, read_manifest
from .predict import Predictions, predict_manifest
from .report import markdown_report, write_report
from .splits import group_folds, plan_folds
from .systems import FUSION_SYSTEMS

__all__ = [
    "FUSION_SYSTEMS",
    "Comparison",
    "Predictions",
    "SystemScores",
    "compare_predictions",
    "evaluate_manifest",
    "evaluate_predictions",
    "group_folds",
    "load_manifest",
    "markdown_report",
    "plan_folds",
    "predict_manifest",
    "read_manifest",
    "write_report",
]
