"""The report of an evaluation: ``metrics.json``, ``metrics.md`` and ``comparison.png``.

:func:`write_report` writes what :func:`~multimodal_ser.evaluation.compare.compare_predictions`
returns; :func:`markdown_report` is the readable table (one row per modality and fusion, then
fusion weights, calibration, confusion matrices, per-group and per-presence scores).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..files import atomic_output
from . import metrics as M


def write_report(result: dict, out_dir: str | os.PathLike) -> Path:
    """Write ``metrics.json``, ``metrics.md`` and ``comparison.png`` of an evaluation into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output(out_dir / "metrics.json") as tmp:
        written = {k: v for k, v in result.items() if k != "probabilities"}
        tmp.write_text(json.dumps(written, indent=2, default=_json_default) + "\n")
    with atomic_output(out_dir / "metrics.md") as tmp:
        tmp.write_text(markdown_report(result))
    with atomic_output(out_dir / "comparison.png") as tmp:
        _plot(result, tmp)
    return out_dir


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


_TABLE_COLUMNS = ("n", "coverage", "ua", "ua_ci", "wa", "wa_ci", "macro_f1", "macro_f1_ci", "ece")


def markdown_report(result: dict) -> str:
    """The comparison as Markdown: the main table (one row per modality / fusion), fusion
    parameters, calibration, confusion matrices and, when present, per-group UA."""
    systems = result["systems"]
    lines = [
        "# Modality and fusion comparison",
        "",
        f"{result['n_items']} items ({result['n_failed']} failed and left out), {result['n_groups']} groups, "
        + (f"{result['folds']}-fold group cross-fitting (fold sizes {result['fold_sizes']})" if result.get("folds")
           else "no cross-fitting (one group)")
        + f", seed {result['seed']}; 95% intervals from {result['bootstrap']} bootstrap resamples of whole {result['bootstrap_unit']}s.",
        "Every learned fusion is fitted on other groups than the ones it is scored on; the default fusion is scored as "
        "shipped (its card says what it was learned on). `n` = items the system gives a label to; `coverage` = n / items.",
        "",
    ]
    lines += [f"**Note:** {note}" for note in result.get("notes", [])] + ([""] if result.get("notes") else [])
    lines += [f"**Warning:** {w}" for w in result.get("warnings", [])] + ([""] if result.get("warnings") else [])
    if result.get("manifest"):
        lines += [f"Manifest: `{result['manifest'].get('path', result['manifest'].get('source'))}`", ""]
    if result.get("text_sources"):
        lines += [f"Text read from: {result['text_sources']}", ""]
    reference = result.get("models", {}).get("audio", {}).get("reference", "none")
    if reference != "none":
        against = "the mean of this manifest's items" if reference == "collection" else f"`{reference['file']}` (sha256 {reference['sha256'][:12]}…)"
        lines += [f"Voice read against {against}, by voice heads trained that way (README, Voice reference).", ""]
    rows = {v["name"]: v for v in systems.values()}
    lines += [M.markdown_table(rows, columns=list(_TABLE_COLUMNS), index_name="system"), ""]
    if result.get("gains"):
        lines += [
            "## What fusion adds: UA minus the UA of the best of its modalities alone",
            "",
            "On the items both label; 95% interval from resampling both systems together (paired bootstrap).",
            "",
            M.markdown_table(
                {
                    systems[key]["name"]: {"best alone": g["reference"], "n": g["n"], "UA difference": g["ua_difference"],
                                           "95% CI": g["ua_difference_ci"]}
                    for key, g in result["gains"].items()
                },
                columns=["best alone", "n", "UA difference", "95% CI"],
                index_name="system",
            ),
            "",
        ]
    learned = {k: v for k, v in systems.items() if v["kind"] == "late_learned" and "parameters" in v}
    if learned:
        lines += ["## Learned late-fusion weights (mean over folds; the most reliable modality has weight 1)", ""]
        table = {
            v["name"]: {
                **{m: v["parameters"]["weights_mean"][m] for m in v["modalities"]},
                "T (mean)": float(np.mean([t for t in v["parameters"]["temperature_per_fold"] if t is not None])),
            }
            for v in learned.values()
        }
        lines += [M.markdown_table(table, columns=[*result["modalities"], "T (mean)"], index_name="system"), ""]
    calibration = {
        v["name"]: {"ECE before": v.get("ece_uncalibrated"), "ECE after": v.get("ece_temperature_scaled", v.get("ece"))}
        for v in systems.values()
        if "ece_uncalibrated" in v
    }
    if calibration:
        lines += [
            "## Calibration (expected calibration error, 15 bins)",
            "",
            "Before: T = 1. After: the temperature fitted on the training folds (for equal weights, "
            "temperature scaling with the weights kept at 1.0).",
            "",
            M.markdown_table(calibration, columns=["ECE before", "ECE after"], index_name="system"),
            "",
        ]
    lines += ["## Confusion matrices (rows = truth)", ""]
    for v in systems.values():
        if "confusion" in v:
            lines += [f"### {v['name']}", "", M.markdown_confusion(v["confusion"], labels=result["labels"]), ""]
    if result.get("by_group"):
        lines += ["## Unweighted accuracy per group", ""]
        keys = list(systems)
        table = {g: {systems[k]["name"]: metrics.get(k, {}).get("ua") for k in keys} for g, metrics in result["by_group"].items()}
        lines += [M.markdown_table(table, columns=[systems[k]["name"] for k in keys], index_name="group"), ""]
    if result.get("by_presence"):
        lines += ["## Unweighted accuracy per presence pattern (which modalities the items have)", ""]
        keys = list(systems)
        table = {
            f"{p} (n={part['n_items']})": {systems[k]["name"]: part["systems"][k].get("ua") for k in keys}
            for p, part in result["by_presence"].items()
        }
        lines += [M.markdown_table(table, columns=[systems[k]["name"] for k in keys], index_name="items with"), ""]
    if result.get("failures"):
        lines += ["## Failed items", ""]
        lines += [f"- `{f['path']}` (line {f['line']}): {f['reason']}" for f in result["failures"]] + [""]
    return "\n".join(lines)


def _plot(result: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: the Agg canvas, no global state

    scored = [v for v in result["systems"].values() if "ua" in v]
    names = [v["name"] for v in scored]
    figure = Figure(figsize=(9, 0.45 * len(scored) + 1.6))
    axes = figure.add_subplot()
    y = np.arange(len(scored))
    height = 0.38
    for shift, metric, colour in ((-height / 2, "ua", "tab:blue"), (height / 2, "macro_f1", "tab:orange")):
        values = np.array([v[metric] for v in scored])
        low = values - np.array([v[f"{metric}_ci"][0] for v in scored])
        high = np.array([v[f"{metric}_ci"][1] for v in scored]) - values
        axes.barh(y + shift, values, height, xerr=[np.maximum(low, 0), np.maximum(high, 0)], color=colour,
                  capsize=3, label={"ua": "unweighted accuracy", "macro_f1": "macro-F1"}[metric])
    axes.set_yticks(y, names)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    folds = f"{result['folds']}-fold group cross-fitting" if result.get("folds") else "one group, nothing learned"
    axes.set_xlabel(f"score (95% bootstrap interval), {result['n_items']} items, {folds}")
    axes.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    with open(path, "wb") as f:
        figure.savefig(f, format="png", dpi=110)
