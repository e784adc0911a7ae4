"""Timelines built in memory with known contents (no model runs): for the use-case metrics and the report."""

from __future__ import annotations

import numpy as np
import pandas as pd

from multimodal_ser.grid import make_grid, modality_table
from multimodal_ser.labels import EMOTIONS, SENTIMENTS
from multimodal_ser.timeline import WORD_COLUMNS, Timeline


def segments_table(starts, ends, speakers, *, labels=None, sentiments=None, texts=None) -> pd.DataFrame:
    """A segments table with the grid, voice, words and fused columns; ``labels`` (one per row)
    makes every branch and the fusion certain of that label; ``sentiments`` likewise for the words."""
    n = len(starts)
    grid = make_grid(starts, ends, speakers=speakers, texts=texts)
    grid["speech"] = True
    labels = labels or ["neutral"] * n
    probs = np.array([[1.0 if e == label else 0.0 for e in EMOTIONS] for label in labels]).reshape(n, len(EMOTIONS))
    present = np.ones(n, bool)
    tables = [grid, modality_table("audio", probs, present), modality_table("text", probs, present)]
    fused = modality_table("fused", probs, present)
    fused = fused.rename(columns={"fused_label": "label", "fused_confidence": "confidence"}).drop(columns=["fused_present", "fused_embedding"])
    fused["agreement"] = 1.0
    fused["fused_from"] = "audio+text"
    sentiments = sentiments or ["neutral"] * n
    words = pd.DataFrame({f"text_sentiment_{s}": [1.0 if v == s else 0.0 for v in sentiments] for s in SENTIMENTS})
    words["sentiment"] = sentiments
    return pd.concat([*tables, words, fused], axis=1)


def synthetic_timeline(seconds: float, *, seed: int = 0, speakers=("agent", "customer"), faces: int = 2, fps: float = 4.0) -> Timeline:
    """A timeline of ``seconds`` with turns of 2-8 s between ``speakers``, 2.5 words/s and ``faces``
    faces sampled at ``fps``: the size of a real one, random contents (seeded)."""
    rng = np.random.default_rng(seed)
    starts, ends, who, labels = [], [], [], []
    t = 0.5
    while t < seconds - 1:
        length = min(rng.uniform(2, 8), seconds - t)
        starts.append(t)
        ends.append(t + length)
        who.append(speakers[len(starts) % len(speakers)])
        labels.append(EMOTIONS[rng.integers(len(EMOTIONS))])
        t += length + rng.uniform(0.1, 1.5)
    words_per_segment = [max(1, int((e - s) * 2.5)) for s, e in zip(starts, ends)]
    texts = [" ".join(f"word{j}" for j in range(k)) for k in words_per_segment]
    sentiments = [SENTIMENTS[rng.integers(3)] for _ in starts]
    segments = segments_table(starts, ends, who, labels=labels, sentiments=sentiments, texts=texts)
    segments["face_label"] = segments["label"]
    segments["face_confidence"] = rng.uniform(0.3, 1.0, len(segments))
    segments["confidence"] = rng.uniform(0.3, 1.0, len(segments))
    segments["agreement"] = rng.uniform(0.4, 1.0, len(segments))
    segments["speaker_face_id"] = pd.array([speakers.index(w) if speakers.index(w) < faces else None for w in who], dtype="Int64")
    rows = []
    for i, (s, e, k, spk) in enumerate(zip(starts, ends, words_per_segment, who)):
        edges = np.linspace(s, e, k + 1)
        rows += [{"word": f" word{j}", "start": edges[j], "end": edges[j + 1], "probability": 0.9, "segment_id": i, "speaker": spk} for j in range(k)]
    words = pd.DataFrame(rows, columns=list(WORD_COLUMNS))
    times = np.arange(0, seconds, 1 / fps)
    frames = pd.DataFrame({
        "time": np.repeat(times, faces),
        "face_id": np.tile(np.arange(faces), len(times)),
        "engagement": rng.uniform(0, 1, len(times) * faces),
        "face_present": True,
    })
    metadata = {"source": {"file": "synthetic", "duration": seconds}, "pipeline": "call"}
    return Timeline(segments=segments, words=words, frames=frames, metadata=metadata)
