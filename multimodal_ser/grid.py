"""The segment grid every branch reports on, and the per-modality column contract.

The grid is a DataFrame with one row per segment: ``segment_id`` (int), ``start``, ``end``
(float seconds on the media's clock), ``speaker`` (str or None) and ``text`` (str, "" when
nothing was said). Each branch returns a table with exactly the grid's rows, in the grid's
order, so fusion is a column join. A modality that is absent for a segment is a row with
``<m>_present=False`` and null values, never a dropped row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .labels import EMOTIONS

GRID_COLUMNS: tuple[str, ...] = ("segment_id", "start", "end", "speaker", "text")


def empty_grid() -> pd.DataFrame:
    """A grid with no segments (for example a recording of pure silence)."""
    return make_grid([], [])


def make_grid(starts, ends, *, speakers=None, texts=None) -> pd.DataFrame:
    """Build a grid from parallel sequences; times in seconds, sorted by start."""
    n = len(starts)
    grid = pd.DataFrame(
        {
            "start": np.asarray(starts, dtype=np.float64).reshape(n),
            "end": np.asarray(ends, dtype=np.float64).reshape(n),
            "speaker": pd.Series(list(speakers) if speakers is not None else [None] * n, dtype=object),
            "text": pd.Series(list(texts) if texts is not None else [""] * n, dtype=object),
        }
    )
    grid = grid.sort_values("start", kind="stable").reset_index(drop=True)
    grid.insert(0, "segment_id", np.arange(n, dtype=np.int64))
    return grid


def modality_table(
    modality: str,
    probabilities: np.ndarray,
    present: np.ndarray,
    embeddings: np.ndarray | None = None,
) -> pd.DataFrame:
    """Columns of one modality for ``n`` grid rows.

    Args:
        modality: ``"audio"``, ``"text"`` or ``"face"``; prefixes every column.
        probabilities: shape ``(n, len(EMOTIONS))``, rows summing to 1 where present.
        present: shape ``(n,)`` bool; rows that are False get null label, confidence,
            probabilities and embedding whatever ``probabilities`` holds.
        embeddings: shape ``(n, d)`` float, or None when the branch has none.

    Returns:
        ``<m>_present``, ``<m>_label``, ``<m>_confidence``, ``<m>_<label>`` for each label,
        ``<m>_embedding`` (a list of float32 per row, None where absent).
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    present = np.asarray(present, dtype=bool)
    n = len(present)
    if probabilities.shape != (n, len(EMOTIONS)):
        raise ValueError(f"{modality} probabilities must have shape ({n}, {len(EMOTIONS)}), not {probabilities.shape}")
    probs = np.where(present[:, None], probabilities, np.nan)
    best = np.nanargmax(np.where(present[:, None], probs, 0.0), axis=1) if n else np.zeros(0, dtype=int)
    table = pd.DataFrame({f"{modality}_present": present})
    table[f"{modality}_label"] = pd.Series(
        [EMOTIONS[i] if p else None for i, p in zip(best, present)], dtype=object
    )
    table[f"{modality}_confidence"] = np.where(present, probs[np.arange(n), best] if n else 0.0, np.nan)
    for j, label in enumerate(EMOTIONS):
        table[f"{modality}_{label}"] = probs[:, j]
    if embeddings is None:
        table[f"{modality}_embedding"] = pd.Series([None] * n, dtype=object)
    else:
        embeddings = np.asarray(embeddings, dtype=np.float32)
        table[f"{modality}_embedding"] = pd.Series(
            [row if p else None for row, p in zip(embeddings, present)], dtype=object
        )
    return table


def absent_table(modality: str, n: int) -> pd.DataFrame:
    """A modality that was not run or saw nothing: ``n`` rows with ``<m>_present=False``."""
    return modality_table(modality, np.full((n, len(EMOTIONS)), np.nan), np.zeros(n, dtype=bool))
