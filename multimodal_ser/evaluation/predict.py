"""Stage 1 of ``mser evaluate``: every branch once per manifest item, as one :class:`Predictions` table.

:func:`predict_manifest` runs :class:`~multimodal_ser.evaluation.items.ItemRunner` on every row
(rows of one file together), then applies the voice head(s) to the voice features and the text
model to every distinct text in one batch. An item that fails (unreadable media, ...) is logged
with its path and reason and counted in ``failures``; it is left out of every score, so all
systems are compared on the same items. What each pass computes is cached under
``weights.cache_dir()/evaluate`` (:mod:`multimodal_ser.evaluation.cache`).

The predictions must be held out from what trained the branches: evaluating the packaged voice
head on the RAVDESS actors it was trained on measures memory, not recognition. The result warns
when that happens (:attr:`Predictions.warnings`); give ``audio_head`` a head trained on other
speakers, or one per group (``mser evaluate --cross-fit-audio``,
:func:`multimodal_ser.training.fusion.cross_fitted_voice_heads`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..encoder import MAX_PACKED_SECONDS
from ..errors import ModelError
from ..files import cache_dir, sha256_file
from ..fusion import valid_modalities
from ..grid import modality_table
from ..labels import EMOTIONS, MODALITIES
from ..registry import Models
from .cache import PredictionCache
from .items import IMAGE_EXTENSIONS, BranchOutput, ItemPrediction, ItemRunner
from .manifest import load_manifest

log = logging.getLogger(__name__)

PACK_CHUNK = 100
"""Manifest rows whose short items are packed together (their audio is held until encoded)."""


@dataclasses.dataclass(frozen=True)
class Predictions:
    """Every branch's output for the items of a manifest."""

    table: pd.DataFrame
    """one row per manifest row that did not fail: ``path``, ``start``, ``end`` (seconds; NaN = the
    whole file), ``label``, ``group`` (str; the item's own index when the manifest has none),
    ``text`` (what the text branch read), ``text_source`` (``manifest``, ``asr`` or None),
    ``text_language`` (the language the ASR wrote ``text`` in; None for a manifest's text), the
    manifest's other columns (``source``, ``actor``, ...), and for each requested modality the
    columns of :func:`multimodal_ser.grid.modality_table`."""
    failures: list[dict]
    """``{"path", "line", "reason"}`` of each item that failed."""
    modalities: tuple[str, ...]
    model_ids: dict
    warnings: tuple[str, ...] = ()
    """what makes some scores untrustworthy (for example a head scored on its own training speakers)."""


def item_groups(table: pd.DataFrame) -> list[str]:
    """Each manifest row's group: its ``group`` when given, else ``item-<its position>`` (a group of its own)."""
    return [str(g) if isinstance(g, str) and g.strip() else f"item-{i}" for i, g in enumerate(table["group"])]


def predict_manifest(
    manifest: str | os.PathLike | pd.DataFrame,
    *,
    modalities: Sequence[str] = MODALITIES,
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
) -> Predictions:
    """Run each requested branch once on every item of a labelled manifest (see the module docstring).

    Args:
        manifest: a manifest CSV (:func:`multimodal_ser.evaluation.manifest.read_manifest`; labels
            must be names of :data:`~multimodal_ser.labels.EMOTIONS`), or an equivalent DataFrame.
        modalities: branches to run, a non-empty subset of ``("audio", "text", "face")``.
        asr_model: packaged Whisper name or CTranslate2 folder: the speech encoder and, for rows
            without ``text``, the transcriber.
        language: spoken language for ASR (ISO code); None detects it per item.
        images_are_face_crops: images already are face crops (FER2013 style): classify the whole
            image instead of detecting faces in it.
        fps: video frames per second read by the face branch.
        audio_head: the voice head file; None uses the packaged one. A mapping ``{group: head
            file}`` gives each group's items a head that was trained without that group
            (cross-fitted heads: the honest way to evaluate on the speakers the packaged head
            was trained on); every group with audio or video items must then have one.
        text_head: the text head file; None uses the packaged one.
        threads: CPU threads for the encoder and the decoder.
        use_cache: read and write the per-branch prediction cache.
        pack: encode items of at most :data:`~multimodal_ser.encoder.MAX_PACKED_SECONDS`
            several at a time, nearly as alone (:mod:`multimodal_ser.evaluation.packed`); False
            gives each item windows of its own.
        voice_reference: ``collection`` reads every item's voice features less the mean over all
            the manifest's items (the manifest is the collection; at least
            :data:`~multimodal_ser.voice.MIN_COLLECTION` items with speech); a path, less the mean
            saved there (:mod:`multimodal_ser.voice_reference`). Either way with the packaged head
            trained that way unless ``audio_head`` names heads, which must be collection heads too.
            ``none`` reads them as computed.
        progress: show a progress bar.

    Returns:
        :class:`Predictions`.

    Raises:
        ManifestError: the manifest is malformed.
        ModelError: a model file is missing or corrupt (fatal: it would fail every item).
    """
    modalities = valid_modalities(modalities)
    models = Models(asr_model=asr_model, language=language, word_timestamps=False, threads=threads, fps=fps, text_head=text_head)
    table, manifest_info = load_manifest(manifest)
    heads = _voice_heads(audio_head, table, voice_reference) if "audio" in modalities else {}
    from ..voice import FEATURE_RECIPE

    cache = PredictionCache(cache_dir() / "evaluate" if use_cache else None)
    # what the encoder pass and the face branch depend on; the heads' ids are added after the pass
    ids: dict = {}
    if "audio" in modalities:
        ids["audio"] = {
            "encoder": models.whisper_id(),
            "features": {"recipe": FEATURE_RECIPE, "span": "vad-first-to-last, voice.segment_span"},
        }
    asr_languages = None
    if "text" in modalities:
        from ..asr import MAX_NEW_TOKENS, TOKENS_PER_SECOND

        asr_languages = models.text().languages  # the words of other languages would feed nothing
        ids["asr"] = {"engine": "ctranslate2", **models.whisper_id(), "language": language, "beam_size": 5,
                      "max_new_tokens": {"per_second": TOKENS_PER_SECOND, "at_most": MAX_NEW_TOKENS},
                      "decoded_languages": list(asr_languages)}
    if pack:  # a packed item's results differ from its results alone, within the noise
        from ..asr import DECODE_BATCH
        from ..encoder import LENGTH_GRID_SECONDS, PADDING_STRIDE, SHARED_PADDING_CLIPS

        layout = {"max_seconds": MAX_PACKED_SECONDS, "padding_stride": PADDING_STRIDE, "decode_batch": DECODE_BATCH,
                  "shared_padding": {"lenders": SHARED_PADDING_CLIPS, "length_grid_s": LENGTH_GRID_SECONDS},
                  "decoder_memory": "one row per padding stride"}
        if "audio" in ids:
            ids["audio"]["features"]["packed"] = layout
        if "asr" in ids:
            ids["asr"]["packed"] = layout
    if "face" in modalities:
        ids["face"] = {"models": models.face().model_ids, "config": models.face().config, "crops": images_are_face_crops}

    runner = ItemRunner(models, cache, ids, modalities, images_are_face_crops=images_are_face_crops, pack=pack, asr_languages=asr_languages)
    items: list[ItemPrediction] = []
    failures: list[dict] = []
    order = np.argsort(table["path"].to_numpy(dtype=str), kind="stable")  # rows of one file together
    for position, index in enumerate(tqdm(order, desc="predicting items", unit="item", disable=not progress)):
        if position % PACK_CHUNK == 0:
            runner.prepare([(int(i), table.iloc[i]) for i in order[position : position + PACK_CHUNK]])
        row = table.iloc[index]
        try:
            items.append(runner.run(row, int(index)))
        except (ModelError, ImportError, NameError, AttributeError):  # broken models or code: every item would fail
            raise
        except Exception as e:  # one bad item must not stop the evaluation
            reason = f"{type(e).__name__}: {e}"
            log.warning("%s: item failed (%s)", row["path"], reason)
            log.debug("traceback of the failed item", exc_info=True)
            failures.append({"path": str(row["path"]), "line": int(index) + 2, "reason": reason})
    n_text_only = sum(item.kind == "none" for item in items)
    if n_text_only:
        log.warning("%d items have no media file: only their text was used", n_text_only)
    warnings = []
    if "audio" in modalities:
        ids["audio"]["voice"] = {str(head): models.voice(head).model_ids for head in sorted(set(heads.values()), key=str)}
        ids["audio"]["reference"] = voice_reference if voice_reference in ("none", "collection") else {
            "file": Path(voice_reference).name, "sha256": sha256_file(voice_reference)}
        warnings += _heard_in_training(models, table, heads)
        _voice_branches(models, items, heads, voice_reference)
    if "text" in modalities:
        ids["text"] = models.text().model_ids
        warnings += _text_branches(models, items, cache, ids["text"])
    out = prediction_table(table, items, modalities)
    if failures:
        log.warning("%d of %d items failed; they are left out of every score", len(failures), len(table))
    ids["manifest"] = manifest_info
    for warning in warnings:
        log.warning("%s", warning)
    return Predictions(table=out, failures=failures, modalities=modalities, model_ids=ids, warnings=tuple(warnings))


def _heard_in_training(models: Models, table: pd.DataFrame, heads: dict) -> list[str]:
    """A warning per voice head that is applied to clips of speakers it was trained on (RAVDESS,
    TurEV-DB or URDU file names of a speaker in its config's ``training.speakers``): on them it
    recalls, it does not recognise."""
    from .datasets import corpus_speaker

    heard: dict[str, set] = {}
    counts: dict[str, int] = {}
    for path, group in zip(table["path"], table["group"]):
        speaker = corpus_speaker(Path(path).stem)
        if speaker is None:
            continue
        head = heads.get(str(group), heads.get(None))
        if speaker in models.voice(head).config.get("training", {}).get("speakers", []):
            name = "the packaged voice head" if head is None else f"voice head {head}"
            heard.setdefault(name, set()).add({"ravdess": "RAVDESS", "turev-db": "TurEV-DB", "urdu": "URDU"}[speaker.split(":")[0]])
            counts[name] = counts.get(name, 0) + 1
    return [
        f"{counts[name]} items are {'/'.join(sorted(corpora))} clips of speakers {name} was trained on: its scores on them "
        "(and every fusion with audio) measure memory, not recognition. For RAVDESS, use voice heads trained without "
        "each actor (mser evaluate --cross-fit-audio DATA_DIR); for the others, mser crossval."
        for name, corpora in heard.items()
    ]


def _voice_heads(audio_head, table: pd.DataFrame, reference: str) -> dict:
    """``{group: head path or None}``; the key None holds the head of every group when one head is used
    (None: the packaged head of ``reference``)."""
    from ..voice import packaged_head_path

    if audio_head is None:
        return {None: None if reference == "none" else packaged_head_path("collection")}
    if isinstance(audio_head, (str, os.PathLike)):
        return {None: Path(audio_head)}
    if not isinstance(audio_head, Mapping):
        raise ValueError(f"audio_head must be a path, a mapping group -> path, or None, not {type(audio_head).__name__}")
    heads = {str(g): Path(p) for g, p in audio_head.items()}
    sound = np.array([Path(p).suffix.lower() not in IMAGE_EXTENSIONS and Path(p).is_file() for p in table["path"]])
    groups = [g for g, s in zip(table["group"], sound) if s]
    missing = sorted({str(g) for g in groups if g is None or str(g) not in heads})
    if missing:
        raise ValueError(
            f"audio_head maps groups {sorted(heads)[:5]}..., but items with sound also have groups {missing[:5]} without a head"
        )
    return heads


def _voice_branches(models: Models, items: list[ItemPrediction], heads: dict, reference: str) -> None:
    """Voice emotion of every item from its voice features, each group through its head, read
    against ``reference`` (for ``collection``: the mean feature row of all items, each item weighing
    the same); windows are averaged weighted by their seconds of speech.

    Raises:
        ModelError: a head reads features against another reference than ``reference``.
        ValueError: a collection of fewer than :data:`~multimodal_ser.voice.MIN_COLLECTION` items with speech.
    """
    from ..voice import MIN_COLLECTION, collection_mean
    from ..voice_reference import load_reference

    kind = "none" if reference == "none" else "collection"
    for head in set(heads.values()):
        if models.voice(head).reference != kind:
            raise ModelError(f"voice head {models.voice(head).path}: it reads features against {models.voice(head).reference!r}, "
                             f"the evaluation against {kind!r} (--voice-reference)")
    spoken = [item.voice for item in items if item.voice is not None and not item.voice.empty]
    collection = None
    if reference not in ("none", "collection"):
        collection = load_reference(reference).mean
    elif reference == "collection":
        if len(spoken) < MIN_COLLECTION:
            raise ValueError(f"--voice-reference collection needs at least {MIN_COLLECTION} items with speech in the manifest "
                             f"(its mean is the reference), not {len(spoken)}")
        collection = collection_mean(np.stack([np.average(v.features, axis=0, weights=v.weights) for v in spoken]))
    for item in items:
        voice, item.voice = item.voice, None
        if voice is None or voice.empty:
            item.branches["audio"] = BranchOutput()
            continue
        model = models.voice(heads.get(item.group, heads.get(None)))
        prediction = model.predict_features(voice.features, collection=collection)
        w = np.asarray(voice.weights, dtype=np.float64)
        w = w / w.sum()
        probabilities = np.tensordot(w, prediction.emotions, axes=1)
        embedding = np.tensordot(w, prediction.embeddings.astype(np.float64), axes=1)
        item.branches["audio"] = BranchOutput(probabilities / probabilities.sum(), embedding.astype(np.float32))


def _text_branches(models: Models, items: list[ItemPrediction], cache: PredictionCache, text_ids: dict) -> list[str]:
    """Text emotion for every distinct non-blank text, from the cache or in one batch; none at all
    when ``models.language`` is one the text head does not read (see :func:`multimodal_ser.text.text_table`),
    and none for an item whose ASR text is in such a language (detected).

    Returns:
        A warning naming the languages the text head left unread, if any.
    """
    from ..asr import language_code

    readable = models.text().languages
    if models.language is not None and language_code(models.language) not in readable:
        for item in items:
            item.branches["text"] = BranchOutput()
        return []
    unread = Counter(item.text_language for item in items if item.text_language is not None and language_code(item.text_language) not in readable)
    texts = sorted({item.text.strip() for item in items if item.text and item.text.strip() and item.text_language not in unread})
    found: dict[str, BranchOutput] = {}
    missing = []
    for text in texts:
        cached = cache.get("text", cache.key("text", text, text_ids))
        if cached is None:
            missing.append(text)
        else:
            found[text] = BranchOutput.from_arrays(cached)
    if missing:
        prediction = models.text().predict(missing)
        for text, probabilities, embedding in zip(missing, prediction.emotions, prediction.embeddings):
            found[text] = BranchOutput(np.asarray(probabilities, dtype=np.float64), np.asarray(embedding, dtype=np.float32))
            cache.put("text", cache.key("text", text, text_ids), **found[text].arrays())
    for item in items:
        text = (item.text or "").strip()
        item.branches["text"] = found[text] if text and item.text_language not in unread else BranchOutput()
    if not unread:
        return []
    heard = ", ".join(f"{language} ({n})" for language, n in unread.most_common())
    return [(f"{sum(unread.values())} items were transcribed in languages the text head does not read ({heard}; it reads "
             f"{', '.join(readable)}): they were not transcribed and have no text emotion. Give --language if the detection is wrong.")]


def prediction_table(manifest: pd.DataFrame, items: Sequence[ItemPrediction], modalities: Sequence[str]) -> pd.DataFrame:
    """The table of :attr:`Predictions.table` from the manifest and its items' branch outputs.

    Args:
        manifest: the manifest (``path``, ``label``, ``start``, ``end``, ``group``, ``text``, ...).
        items: one per row that did not fail, with :attr:`ItemPrediction.branches` filled for
            every one of ``modalities``.
        modalities: the branches that ran.

    Raises:
        ModelError: a modality's embeddings differ in size (the cache mixes models).
    """
    items = sorted(items, key=lambda item: item.index)
    rows = manifest.iloc[[item.index for item in items]].reset_index(drop=True)
    every_group = item_groups(manifest)
    groups = [every_group[item.index] for item in items]
    base = pd.DataFrame(
        {
            "path": rows["path"].astype(str),
            "start": rows["start"].astype(np.float64),
            "end": rows["end"].astype(np.float64),
            "label": rows["label"].astype(str),
            "group": pd.Series(groups, dtype=object),
            "text": pd.Series([item.text for item in items], dtype=object),
            "text_source": pd.Series([item.text_source for item in items], dtype=object),
            "text_language": pd.Series([item.text_language for item in items], dtype=object),
        }
    )
    extra = [
        c for c in rows.columns
        if c not in base.columns and c != "split" and not any(c.startswith(f"{m}_") for m in MODALITIES)
    ]
    tables = [base, rows[extra].reset_index(drop=True)]
    n = len(items)
    for m in modalities:
        branches = [item.branches[m] for item in items]
        present = np.array([b.present for b in branches], dtype=bool)
        probabilities = np.full((n, len(EMOTIONS)), np.nan)
        dims = {len(b.embedding) for b in branches if b.present}
        if len(dims) > 1:
            raise ModelError(f"{m} embeddings of different sizes {sorted(dims)}: the cache mixes models")
        embeddings = np.zeros((n, dims.pop()), dtype=np.float32) if dims else None
        for i, b in enumerate(branches):
            if b.present:
                probabilities[i] = b.probabilities
                embeddings[i] = b.embedding
        tables.append(modality_table(m, probabilities, present, embeddings))
        if any(b.quality is not None for b in branches):  # video faces: the weight fusion gives them
            quality = [(1.0 if b.quality is None else b.quality) if b.present else np.nan for b in branches]
            tables.append(pd.DataFrame({f"{m}_quality": np.asarray(quality, dtype=np.float64)}))
    return pd.concat(tables, axis=1)
