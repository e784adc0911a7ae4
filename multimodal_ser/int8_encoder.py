"""A transformer encoder's linear layers in int8 on the CPU, their activation outliers smoothed into the weights.

Dynamic int8 (one step per weight row, one per activation tensor, computed afresh for each call)
halves the time of all-mpnet-base-v2 on two cores but ruins it as it is: a few channels of its hidden
states run 10-30 times larger than the rest, and one step for the whole tensor leaves the others a
handful of levels (sentence vectors at cosine 0.52 to float32's). Following SmoothQuant (Xiao et al.
2023), every input channel ``j`` of a linear layer is divided by ``s_j = a_j ** alpha / w_j ** (1 - alpha)``
before it is quantised and the weight's column ``j`` multiplied by it, which leaves the product
unchanged: ``a_j`` is the channel's largest magnitude on calibration texts, ``w_j`` the column's.
The activations' range evens out, the weights take part of it.

Smoothed are the attention's query, key, value and output projections and the feed-forward's first
layer (:data:`QUANTISED`). The feed-forward's second layer stays float32: its input, a GELU's
output, is the one no smoothing rescued (cosine 0.65 quantised alone, 0.94 smoothed).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping

import torch
from torch import nn

QUANTISED = ("attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o", "intermediate.dense")
"""Suffixes of the linear layers (``named_modules`` names, as in transformers' MPNet) that run in int8."""

ALPHA = 0.8
"""Share of each channel's range moved into the weights (0: none, 1: all)."""


def quantised_names(model: nn.Module) -> list[str]:
    """Names of ``model``'s linear layers that :func:`quantise` runs in int8, in module order."""
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear) and name.endswith(QUANTISED)]


def activation_ranges(model: nn.Module, run: Callable[[], object]) -> dict[str, torch.Tensor]:
    """The largest magnitude of each input channel of the :func:`quantised_names` layers while ``run()``
    feeds ``model`` calibration texts: ``{name: (in_features,) float32}``.

    Raises:
        ValueError: ``model`` has no such layer, or ``run`` never reached one.
    """
    names = quantised_names(model)
    if not names:
        raise ValueError(f"{type(model).__name__} has no linear layer named *{' or *'.join(QUANTISED)}")
    ranges: dict[str, torch.Tensor] = {}

    def record(name: str):
        def hook(module, inputs, output):
            peak = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(dim=0).float()
            ranges[name] = torch.maximum(ranges[name], peak) if name in ranges else peak
        return hook

    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(record(name)) for name in names]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    if missing := [name for name in names if name not in ranges]:
        raise ValueError(f"calibration never reached {missing[:3]}")
    return ranges


class SmoothedInt8Linear(nn.Module):
    """``linear(x)`` computed as an int8 product of ``x / s`` and ``weight * s`` (dynamic activation step,
    one weight step per output row); ``x`` is ``(..., in_features)`` float32."""

    def __init__(self, linear: nn.Linear, activation_range: torch.Tensor, *, alpha: float = ALPHA):
        super().__init__()
        if activation_range.shape != (linear.in_features,):
            raise ValueError(f"activation range has shape {tuple(activation_range.shape)}, expected ({linear.in_features},)")
        weight = linear.weight.detach().float()
        column_range = weight.abs().amax(dim=0).clamp(min=1e-5)
        smoothing = (activation_range.float().clamp(min=1e-5) ** alpha / column_range ** (1 - alpha)).clamp(min=1e-5)
        self.register_buffer("inverse_smoothing", 1.0 / smoothing)
        weight = weight * smoothing
        steps = (weight.abs().amax(dim=1).clamp(min=1e-8) / 127).double()
        with warnings.catch_warnings():  # quantized tensors are deprecated after torch 2.13, which pyproject pins
            warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
            self.int8 = torch.ao.nn.quantized.dynamic.Linear(linear.in_features, linear.out_features, dtype=torch.qint8)
            zero = torch.zeros(linear.out_features, dtype=torch.long)
            self.int8.set_weight_bias(torch.quantize_per_channel(weight, steps, zero, 0, torch.qint8),
                                      None if linear.bias is None else linear.bias.detach().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.int8(x * self.inverse_smoothing)


def quantise(model: nn.Module, ranges: Mapping[str, torch.Tensor], *, alpha: float = ALPHA) -> nn.Module:
    """``model`` with each of its :func:`quantised_names` layers replaced, in place, by a
    :class:`SmoothedInt8Linear` smoothed by ``ranges`` (from :func:`activation_ranges`); inference only.

    Raises:
        ValueError: ``ranges`` lacks a layer, names one the model does not have, or has the wrong width.
    """
    names = quantised_names(model)
    if sorted(ranges) != sorted(names):
        missing, foreign = sorted(set(names) - set(ranges)), sorted(set(ranges) - set(names))
        raise ValueError(f"activation ranges do not match the model's int8 layers (missing {missing[:3]}, foreign {foreign[:3]})")
    modules = dict(model.named_modules())
    replacements = {name: SmoothedInt8Linear(modules[name], ranges[name], alpha=alpha) for name in names}
    for name, replacement in replacements.items():
        parent, _, child = name.rpartition(".")
        setattr(modules[parent], child, replacement)
    return model.eval()
