"""Segment features of every training clip under each condition, encoded the way the pipeline encodes.

Each window (:mod:`.corpus`) goes once through the shared :class:`~multimodal_ser.encoder.SpeechEncoder`
(which first brings the window to one speech level), and each clip's segment through
:func:`multimodal_ser.voice.segment_features`. Features are cached under
:func:`multimodal_ser.weights.cache_dir` keyed by a hash of everything that shapes them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ... import loudness, voice
from ...encoder import SpeechEncoder
from ...files import atomic_output, cache_dir
from ...weights import PACKAGED_WHISPER, load_openai_whisper
from . import corpus as packing
from .conditions import ISOLATED, Condition
from .corpus import Corpus, render_window, windows_for

log = logging.getLogger(__name__)

ENCODER_NAME = "base"
"""The packaged Whisper model whose encoder the shipped head was trained on."""
PACKING_VERSION = 2
ENCODER_SHAPES: dict[str, tuple[int, int]] = {"base": (7, 512), "tiny.en": (5, 384)}
"""``{packaged Whisper name: (hidden-state layers incl. the embedding, width)}``."""


def recipe_key(corpus: Corpus, condition: Condition, *, seed: int, normalise: bool) -> str:
    """Hash of everything that shapes one condition's features (the cache file's name)."""
    whisper = PACKAGED_WHISPER[ENCODER_NAME]
    recipe = {
        "features": voice.FEATURE_RECIPE,
        "packing": [PACKING_VERSION, packing.TRIM_TOP_DB, packing.CONTEXT_SECONDS, packing.SEGMENT_PAD_SECONDS,
                    packing.GAP_SECONDS, packing.BABBLE_TALKERS],
        "loudness": [loudness.TARGET_DBFS, loudness.ACTIVE_RANGE_DB, loudness.MAX_GAIN_DB] if normalise else None,
        "encoder": [ENCODER_NAME] + [sha for _, _, sha in whisper.parts],
        "condition": condition.name,
        "seed": seed,
        "clips": [[Path(p).name, s, os.path.getsize(p)] for p, s in zip(corpus.manifest["path"], corpus.groups)],
    }
    if condition.kind == ISOLATED:  # its segments come from the voice-activity detector
        from ...vad import SILERO_ONNX_SHA256, VadOptions

        recipe["vad"] = [SILERO_ONNX_SHA256, dataclasses.asdict(VadOptions())]
        recipe["isolated_share"] = packing.ISOLATED_SHARE
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:20]


def extract_features(
    corpus: Corpus,
    conditions: Sequence[Condition],
    *,
    seed: int = 0,
    encoder: SpeechEncoder | None = None,
    normalise: bool = True,
) -> dict[str, np.ndarray]:
    """Features of every clip under each condition, from the cache or computed (and cached).

    Args:
        corpus: the clips.
        conditions: which versions of the audio to encode.
        seed: packing order and noise; part of the cache key.
        encoder: the speech encoder; None loads packaged Whisper ``base`` when something must be encoded.
        normalise: bring each window to one speech level before encoding (how the pipeline encodes);
            False only to measure what that normalisation does. Ignored when ``encoder`` is given.

    Returns:
        ``{condition.name: array of shape (n_clips, n_features) float32}``, rows in corpus order;
        all-NaN rows for clips a condition does not encode (isolated: :func:`.corpus.isolated_rows`).
    """
    if encoder is not None:
        normalise = encoder.normalise
    folder = cache_dir() / "voice-features"
    out: dict[str, np.ndarray] = {}
    for condition in conditions:
        file = folder / f"{condition.name}-{recipe_key(corpus, condition, seed=seed, normalise=normalise)}.npy"
        if file.is_file():
            out[condition.name] = np.load(file)
            log.info("features for %s read from %s", condition.name, file)
            continue
        if encoder is None:
            encoder = SpeechEncoder(load_openai_whisper(ENCODER_NAME), normalise=normalise)
        source, plan = windows_for(corpus, condition, seed=seed)
        features: list[np.ndarray | None] = [None] * len(corpus.audios)
        for placed in tqdm(plan, desc=f"encoding {condition.name}", unit="window"):
            encoded = encoder.encode(render_window(placed, source, condition, seed=seed))
            for p in placed:
                segment = p.segment
                if condition.kind == ISOLATED:  # widened to the shortest segment, as the pipeline does
                    segment = voice.segment_span(encoded, *segment)[:2]
                features[p.index] = voice.segment_features(encoded, *segment)
        width = next(f for f in features if f is not None).shape
        matrix = np.stack([np.full(width, np.nan, dtype=np.float32) if f is None else f for f in features])
        with atomic_output(file) as tmp, open(tmp, "wb") as f:
            np.save(f, matrix)
        log.info("features for %s cached in %s", condition.name, file)
        out[condition.name] = matrix
    return out
