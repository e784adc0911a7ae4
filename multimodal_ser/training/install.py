"""What every trainer does with what it made: install the file, keep the best epoch, write the card beside it."""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path

import torch

from ..files import atomic_output
from ..heads import record_if_packaged, save_head


def install_head(path: str | os.PathLike, tensors: dict[str, torch.Tensor], config: dict) -> str | None:
    """Save a trained head (:func:`~multimodal_ser.heads.save_head`) and, when it lies in the
    package's ``models`` folder, record its sha256 in ``SHA256SUMS``.

    Returns:
        the recorded sha256; None for a file elsewhere (nothing recorded).
    """
    save_head(path, tensors, config)
    return record_if_packaged(path)


def card_beside(out_path: str | os.PathLike, card_path: str | os.PathLike | None = None) -> Path:
    """``card_path``, or the model file's ``<stem>.md`` beside it when None."""
    return Path(card_path) if card_path is not None else Path(out_path).with_suffix(".md")


def write_card(card_path: str | os.PathLike, text: str) -> Path:
    """Write a Markdown model card atomically, UTF-8."""
    card_path = Path(card_path)
    with atomic_output(card_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return card_path


class KeepBest:
    """Early stopping: keeps a copy of the module's weights at its best validation epoch.

    Args:
        module: the network being trained (its ``state_dict`` is copied at each new best).
        higher_is_better: the value is a score (True) or a loss (False).
        patience: epochs without improvement after which :meth:`update` says stop; None never stops.
        min_delta: how far a value must beat the best to count as an improvement.

    Attributes:
        best: the best value so far (-inf or inf before any), ``epoch`` its epoch (0 before any),
        ``info`` what was passed with it.
    """

    def __init__(self, module: torch.nn.Module, *, higher_is_better: bool, patience: int | None = None, min_delta: float = 0.0):
        self.module = module
        self.higher_is_better = higher_is_better
        self.patience = patience
        self.min_delta = min_delta
        self.best = -math.inf if higher_is_better else math.inf
        self.epoch = 0
        self.info = None
        self.state: dict | None = None

    def update(self, epoch: int, value: float, info=None) -> bool:
        """Record one epoch's validation ``value`` (and ``info`` to keep with it when it is the best).

        Returns:
            True when training should stop: ``patience`` epochs have passed since the best one.
        """
        if self.higher_is_better:
            better = value > self.best + self.min_delta
        else:
            better = value < self.best - self.min_delta
        if better or self.state is None:  # the first value is always kept
            self.best, self.epoch, self.info = value, epoch, info
            self.state = copy.deepcopy(self.module.state_dict())
            return False
        return self.patience is not None and epoch - self.epoch >= self.patience

    def restore(self) -> None:
        """Load the best epoch's weights back into the module (nothing happens before any update)."""
        if self.state is not None:
            self.module.load_state_dict(self.state)
