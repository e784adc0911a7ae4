"""A collection's voice reference: the mean voice features of its recordings, kept in a file.

``mser evaluate --voice-reference collection`` has the whole collection at hand. ``mser analyze``
and ``mser batch`` read one recording at a time, so the collection's mean is measured first
(:func:`build_reference`, ``mser voice-reference``: every speech segment of the given recordings,
segmented and encoded exactly as ``mser analyze`` does) and saved (:func:`save_reference`, an
``.npz``); ``--voice-reference FILE`` then has the collection head
(``models/audio_head_collection.safetensors``) read every segment less that mean.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .errors import MserError, VoiceReferenceError
from .files import atomic_output, sha256_file

log = logging.getLogger(__name__)

FORMAT = "multimodal-ser voice reference/1"


@dataclasses.dataclass(frozen=True)
class VoiceReference:
    """The mean voice features of a collection."""

    mean: np.ndarray
    """shape ``(n_features,)`` float32: :func:`multimodal_ser.voice.collection_mean` of its segments."""
    segments: int
    """speech segments the mean was taken over."""
    recordings: list[str]
    """file names of the recordings they came from."""
    recipe: str
    """the feature recipe (:data:`multimodal_ser.voice.FEATURE_RECIPE`) they were computed with."""
    sha256: str = ""
    """hex sha256 of the file it was read from ("" before it is saved)."""
    failed: list[dict] = dataclasses.field(default_factory=list)
    """``{"path", "reason"}`` of the recordings that could not be read (left out of the mean)."""


def save_reference(reference: VoiceReference, path: str | os.PathLike) -> Path:
    """Write ``reference`` to ``path`` (``.npz``; written to a temporary file, then renamed)."""
    path = Path(path)
    info = {"format": FORMAT, "segments": reference.segments, "recordings": reference.recordings, "recipe": reference.recipe}
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, mean=reference.mean.astype(np.float32), info=np.array(json.dumps(info)))
    return path


def load_reference(path: str | os.PathLike) -> VoiceReference:
    """Read a file written by :func:`save_reference`.

    Raises:
        VoiceReferenceError: the file is missing, is not a voice reference, or was computed with other features.
    """
    from .voice import FEATURE_RECIPE, HAND_FEATURES, MIN_COLLECTION

    path = Path(path)
    if not path.is_file():
        raise VoiceReferenceError(f"{path}: voice reference not found (make one with 'mser voice-reference MEDIA... --out {path.name}')")
    try:
        with np.load(path, allow_pickle=False) as data:
            mean, info = data["mean"], json.loads(str(data["info"]))
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise VoiceReferenceError(f"{path}: not a voice reference written by 'mser voice-reference' ({e})") from e
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise VoiceReferenceError(f"{path}: not a voice reference written by 'mser voice-reference' (format {info.get('format') if isinstance(info, dict) else info!r})")
    if info.get("recipe") != FEATURE_RECIPE:
        raise VoiceReferenceError(f"{path}: its features are {info.get('recipe')!r}, this code computes {FEATURE_RECIPE!r}: make it again")
    if mean.ndim != 1 or len(mean) <= len(HAND_FEATURES) or not np.isfinite(mean).all():
        raise VoiceReferenceError(f"{path}: the mean must be a finite vector of the voice features, not shape {mean.shape}")
    if int(info.get("segments", 0)) < MIN_COLLECTION:
        raise VoiceReferenceError(f"{path}: a mean over {info.get('segments')} segments; a reference needs at least {MIN_COLLECTION}")
    return VoiceReference(mean.astype(np.float32), int(info["segments"]), list(info.get("recordings", [])), info["recipe"], sha256_file(path))


def build_reference(paths: Sequence[str | os.PathLike], options, *, progress: bool = False) -> VoiceReference:
    """The mean voice features over every speech segment of ``paths``, each recording segmented and
    encoded as :class:`~multimodal_ser.pipeline.Analyzer` with ``options`` analyses it (all channels
    mixed). A recording that cannot be read is reported and left out.

    Raises:
        VoiceReferenceError: fewer than :data:`~multimodal_ser.voice.MIN_COLLECTION` speech segments in all.
    """
    from .pipeline import Analyzer
    from .voice import FEATURE_RECIPE, MIN_COLLECTION, collection_mean

    analyzer = Analyzer(dataclasses.replace(options, modalities=("audio",), voice_reference=None, diarise=False, speakers=None))
    rows, used, failed = [], [], []
    for path in tqdm(paths, desc="voice reference", unit="file", disable=not progress):
        try:
            features = analyzer.voice_features(path)
        except MserError as e:
            log.warning("%s: left out of the voice reference (%s)", path, e)
            failed.append({"path": str(path), "reason": str(e)})
            continue
        rows.append(features)
        used.append(Path(path).name)
    n = sum(len(r) for r in rows)
    if n < MIN_COLLECTION:
        raise VoiceReferenceError(f"{len(used)} recording(s) gave {n} speech segments; a voice reference needs at least {MIN_COLLECTION}")
    return VoiceReference(collection_mean(np.concatenate(rows)), n, used, FEATURE_RECIPE, failed=failed)
