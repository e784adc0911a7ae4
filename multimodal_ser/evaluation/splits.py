"""Group splits: whole groups (speakers) on one side only, for everything evaluation learns.

:func:`group_folds` assigns whole groups to k folds; :func:`plan_folds` says how many folds a
number of groups allows; :func:`validation_split` holds a fifth of the training groups out for
early stopping.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..validate import valid_int


def group_folds(groups: Sequence, *, folds: int, seed: int = 0) -> np.ndarray:
    """Assign whole groups to ``folds`` folds of similar size.

    Groups are shuffled with ``seed``, then taken largest first (stable) and each put in the fold
    with the fewest items so far.

    Args:
        groups: the group (speaker) of each item, shape ``(n,)``.
        folds: number of folds, >= 2 and at most the number of distinct groups.

    Returns:
        shape ``(n,)`` int: each item's fold in ``0..folds-1``; items of a group share a fold.

    Raises:
        ValueError: fewer distinct groups than folds.
    """
    folds = valid_int("folds", folds, 2)
    groups = np.asarray([str(g) for g in groups], dtype=object)
    names, counts = np.unique(groups, return_counts=True)
    if len(names) < folds:
        raise ValueError(f"{folds} folds need at least {folds} distinct groups, found {len(names)}")
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(len(names))
    ordered = shuffled[np.argsort(-counts[shuffled], kind="stable")]
    sizes = np.zeros(folds, dtype=np.int64)
    fold_of = {}
    for g in ordered:
        f = int(np.argmin(sizes))
        fold_of[names[g]] = f
        sizes[f] += counts[g]
    return np.array([fold_of[g] for g in groups], dtype=np.int64)


def plan_folds(n_groups: int, folds: int) -> tuple[int | None, str | None]:
    """How many group folds the learned fusions can use with ``n_groups`` groups.

    Returns:
        ``(folds to use, note)``: ``folds`` when there are enough groups; ``n_groups``
        (leave-one-group-out) when there are fewer; None when there is a single group (nothing can
        be learned on some speakers and measured on others; single branches and the shipped default
        are still scored). The note says which, for the report; None when nothing changed.
    """
    folds = valid_int("folds", folds, 2)
    if n_groups < 2:
        return None, (
            f"{n_groups} group: learned fusions need speakers to learn on and others to be measured on, so they are "
            "not scored; each branch alone and the fusions as shipped are"
        )
    if n_groups < folds:
        return n_groups, f"{n_groups} groups < {folds} folds: leave-one-group-out ({n_groups} folds)"
    return folds, None


def validation_split(groups: np.ndarray, rows: np.ndarray, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``rows`` (bool mask) by group into training (about 4/5) and validation (about 1/5) masks."""
    inside = np.flatnonzero(rows)
    parts = min(5, len(set(groups[inside])))
    if parts < 2:
        raise ValueError(f"attention fusion needs at least 2 groups to train on, found {parts}")
    held = group_folds(groups[inside], folds=parts, seed=seed) == 0
    train, val = np.zeros(len(groups), dtype=bool), np.zeros(len(groups), dtype=bool)
    train[inside[~held]], val[inside[held]] = True, True
    return train, val
