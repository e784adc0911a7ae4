"""Sentence embeddings of the corpora, cached on disk (``$MSER_CACHE``, default ``~/.cache/multimodal_ser``)."""

from __future__ import annotations

import hashlib
import logging

import numpy as np

from ...files import atomic_output, cache_dir
from ...sentence_encoder import E5Encoder, SentenceEncoder

logger = logging.getLogger(__name__)


def embed_cached(encoder: E5Encoder | SentenceEncoder, texts: list[str], *, name: str) -> tuple[np.ndarray, bool]:
    """``encoder.encode(texts)``, cached on disk under a key of the encoder's weights (``fingerprint``) and the texts.

    Returns:
        float32 ``(len(texts), encoder.dim)`` embeddings, and whether they came from the cache.
    """
    digest = hashlib.sha256(encoder.fingerprint.encode())
    for t in texts:
        digest.update(t.encode("utf-8") + b"\x00")
    path = cache_dir() / "text_embeddings" / f"{digest.hexdigest()[:32]}.npy"
    if path.is_file():
        cached = np.load(path)
        if cached.shape == (len(texts), encoder.dim):
            logger.info("%s: %d embeddings from cache %s", name, len(texts), path)
            return cached, True
    logger.info("%s: encoding %d texts", name, len(texts))
    embeddings = encoder.encode(texts, batch_size=64, progress=True)
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        np.save(f, embeddings)
    return embeddings, False
