"""Fitting the voice head on segment features whose labels may cover only part of the label space.

Loss: for a clip whose corpus can name the classes ``A`` (``allowed``) and whose label stands for
the classes ``S`` (``targets``, see :func:`.corpus.label_sets`), ``-log( sum_{c in S} p_c )`` with
``p`` the softmax over ``A`` only. Classes outside ``A`` get no gradient from that clip. Rows can be
weighted (each corpus the same total weight by default, so 294 URDU clips count as much as 1735
TurEV-DB ones).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from ... import voice
from ...labels import RAVDESS_8
from ...options import VOICE_REFERENCES
from .conditions import CLEAN, Condition
from .features import ENCODER_NAME, ENCODER_SHAPES


@dataclasses.dataclass(frozen=True)
class HeadRecipe:
    """Hyper-parameters of :func:`fit_head` (chosen by speaker-disjoint cross-validation; see the model card)."""

    l2: float = 0.05
    """linear branch: penalty on the sum of squared weights, added to the mean loss."""
    lbfgs_iterations: int = 100
    """linear branch: L-BFGS iterations (full batch)."""
    hidden: int = 256
    dropout: float = 0.5
    input_dropout: float = 0.2
    epochs: int = 20
    """MLP branch: passes over the training rows (AdamW, one-cycle learning rate)."""
    batch_size: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    label_smoothing: float = 0.1
    """share of each row's target spread evenly over the classes its corpus can name."""
    augment: tuple[str, ...] = ("isolated", "telephone")
    """:attr:`Condition.name` s whose versions of the training clips are added to the training set."""
    balance_corpora: bool = True
    """weight rows so that every corpus has the same total weight."""
    reference: str = "none"
    """what the head reads features against (:data:`multimodal_ser.options.VOICE_REFERENCES`): with
    ``collection``, each corpus's clips (each version apart: clean, isolated, telephone) have that
    corpus's mean removed in training, and held-out clips their own corpus's mean over the held-out clips."""

    def __post_init__(self):
        for name in ("l2", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)}")
        for name in ("lbfgs_iterations", "hidden", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, not {getattr(self, name)}")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), not {self.learning_rate}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), not {self.label_smoothing}")
        if self.reference not in VOICE_REFERENCES:
            raise ValueError(f"reference must be one of {VOICE_REFERENCES}, not {self.reference!r}")


RECIPE = HeadRecipe()
"""The recipe of the shipped head."""


def augment_conditions(recipe: HeadRecipe) -> list[Condition]:
    """The extra versions of the training clips the recipe trains on."""
    out = [Condition.parse(name) for name in recipe.augment]
    if any(c.kind == "clean" for c in out):
        raise ValueError("augment lists extra versions of the clips; 'clean' is always used")
    return out


def training_rows(features: dict[str, np.ndarray], recipe: HeadRecipe, rows: np.ndarray, *per_clip: np.ndarray) -> tuple[np.ndarray, ...]:
    """Training features, plus each per-clip array (targets, masks, weights) repeated to match:
    the clean clips of ``rows`` (bool, shape ``(n,)``) first, then each augmented version of them
    (clips a version did not encode, all-NaN rows, are left out)."""
    names = [CLEAN.name] + [c.name for c in augment_conditions(recipe)]
    keep = [rows & ~np.isnan(features[name]).all(axis=1) for name in names]
    x = np.concatenate([features[name][k] for name, k in zip(names, keep)])
    return (x,) + tuple(np.concatenate([a[k] for k in keep]) for a in per_clip)


def corpus_weights(corpus: Sequence[str]) -> np.ndarray:
    """shape ``(n,)``: ``1 / (clips of the row's corpus)``, rescaled to mean 1."""
    corpus = np.asarray(corpus, dtype=object)
    names, inverse, counts = np.unique(corpus, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inverse]
    return w / w.mean()


def _set_loss(logits: torch.Tensor, targets: torch.Tensor, allowed: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Per-row ``-log P(target set)`` under the softmax over the allowed classes, with label smoothing."""
    log_p = torch.log_softmax(logits.masked_fill(~allowed, float("-inf")), dim=1)
    nll = -torch.logsumexp(log_p.masked_fill(~targets, float("-inf")), dim=1)
    if smoothing == 0:
        return nll
    uniform = -(log_p.masked_fill(~allowed, 0.0).sum(dim=1) / allowed.sum(dim=1))
    return (1 - smoothing) * nll + smoothing * uniform


def fit_head(
    features: np.ndarray,
    targets: np.ndarray,
    *,
    allowed: np.ndarray | None = None,
    weights: np.ndarray | None = None,
    seed: int,
    recipe: HeadRecipe = RECIPE,
) -> voice.VoiceHead:
    """Train a :class:`~multimodal_ser.voice.VoiceHead` on segment features.

    Args:
        features: shape ``(n, n_features)`` float32, rows from :func:`multimodal_ser.voice.segment_features`.
        targets: shape ``(n,)`` int class indices into :data:`~multimodal_ser.labels.RAVDESS_8`, or
            shape ``(n, 8)`` bool target sets (:func:`.corpus.label_sets`).
        allowed: shape ``(n, 8)`` bool, the classes each row's corpus can name; None: all.
        weights: shape ``(n,)`` row weights; None: equal.
        seed: initialisation and batch order.

    Returns:
        The head in eval mode, its standardisation fitted on ``features``.
    """
    n_layers, d_model = ENCODER_SHAPES[ENCODER_NAME]
    n_classes = len(RAVDESS_8)
    expected = 2 * n_layers * d_model + len(voice.HAND_FEATURES)
    if features.ndim != 2 or features.shape[1] != expected:
        raise ValueError(f"features must have shape (n, {expected}), not {features.shape}")
    targets = np.asarray(targets)
    if targets.ndim == 1:
        targets = np.eye(n_classes, dtype=bool)[targets.astype(np.int64)]
    allowed = np.ones((len(features), n_classes), dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool)
    weights = np.ones(len(features)) if weights is None else np.asarray(weights, dtype=np.float64)
    if not (len(targets) == len(allowed) == len(weights) == len(features)):
        raise ValueError(f"{len(features)} feature rows but {len(targets)} targets, {len(allowed)} masks, {len(weights)} weights")
    if (targets & ~allowed).any() or not targets.any(axis=1).all():
        raise ValueError("every row needs a non-empty target set inside its allowed classes")
    torch.manual_seed(seed)
    head = voice.VoiceHead(
        n_layers=n_layers, d_model=d_model, n_hand=len(voice.HAND_FEATURES),
        hidden=recipe.hidden, dropout=recipe.dropout, input_dropout=recipe.input_dropout,
    )
    std = np.nanstd(features, axis=0)
    head.mean.copy_(torch.from_numpy(np.nan_to_num(np.nanmean(features, axis=0))))
    head.std.copy_(torch.from_numpy(np.where(np.nan_to_num(std) > 1e-6, np.nan_to_num(std), 1.0)))
    with torch.no_grad():
        z = head.standardise(torch.from_numpy(features))
    t = torch.from_numpy(targets)
    a = torch.from_numpy(allowed)
    w = torch.from_numpy(weights / weights.mean()).float()

    # linear branch: convex, full batch
    optimizer = torch.optim.LBFGS(head.linear.parameters(), max_iter=recipe.lbfgs_iterations, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = (w * _set_loss(head.linear(z), t, a, 0.0)).mean() + recipe.l2 * head.linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)

    # MLP branch
    params = [head.layer_logits, *head.mlp_in.parameters(), *head.mlp_out.parameters()]
    optimizer = torch.optim.AdamW(params, lr=recipe.learning_rate, weight_decay=recipe.weight_decay)
    steps_per_epoch = -(-len(z) // recipe.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe.learning_rate, total_steps=recipe.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    head.train()
    for _ in range(recipe.epochs):
        for batch in torch.randperm(len(z), generator=generator).split(recipe.batch_size):
            losses = _set_loss(head.mlp_out(head.embed(z[batch])), t[batch], a[batch], recipe.label_smoothing)
            loss = (w[batch] * losses).sum() / w[batch].sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return head.eval()


@torch.inference_mode()
def predict_head(head: voice.VoiceHead, features: np.ndarray) -> np.ndarray:
    """shape ``(n, 8)``: the head's RAVDESS-8 probabilities for feature rows (uncalibrated)."""
    return head.probabilities(torch.from_numpy(features))[0].double().numpy()


def head_config(recipe: HeadRecipe, *, data: str, speakers: Sequence[str], seed: int) -> dict:
    """The JSON config stored with a voice head: features, encoder, classes, architecture, training
    (``speakers``: ``"<corpus>:<id>"`` of every speaker it was trained on, so that an evaluation can
    warn about them; ``ravdess_actors`` lists the RAVDESS ones as numbers)."""
    n_layers, d_model = ENCODER_SHAPES[ENCODER_NAME]
    ravdess = sorted(int(s.split(":", 1)[1]) for s in speakers if s.startswith("ravdess:"))
    return {
        "recipe": voice.FEATURE_RECIPE,
        "reference": recipe.reference,
        "encoder": f"openai-whisper {ENCODER_NAME} (packaged CTranslate2 weights, converted losslessly), level-normalised windows",
        "classes": list(RAVDESS_8),
        "hand_features": list(voice.HAND_FEATURES),
        "architecture": {
            "n_layers": n_layers, "d_model": d_model, "n_hand": len(voice.HAND_FEATURES), "n_classes": len(RAVDESS_8),
            "hidden": recipe.hidden, "dropout": recipe.dropout, "input_dropout": recipe.input_dropout,
        },
        "training": {
            "data": data, "speakers": sorted(speakers), "ravdess_actors": ravdess, "seed": seed,
            "head_recipe": dataclasses.asdict(recipe),
        },
        "circumplex": voice.CIRCUMPLEX,
    }
