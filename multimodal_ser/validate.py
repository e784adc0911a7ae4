"""Checks of option values shared by the library and the command line (standard library only).

Each returns the value in its canonical type or raises ValueError naming the option.
"""

from __future__ import annotations

import math
import numbers
import os

MAX_FPS = 120.0
"""frames per second: the highest sampling rate the face branch accepts."""


def default_threads() -> int:
    """CPU threads used when none are asked for: the machine's cores, at most 4."""
    return min(os.cpu_count() or 1, 4)


def valid_fps(fps: float) -> float:
    """Return ``fps`` as a float, or raise ValueError unless it is finite and in (0, :data:`MAX_FPS`]."""
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real):
        raise ValueError(f"fps must be a number of frames per second, not {type(fps).__name__}")
    if not (math.isfinite(fps) and 0 < fps <= MAX_FPS):  # also rejects NaN
        raise ValueError(f"fps must be in (0, {MAX_FPS:g}] frames per second, not {fps}")
    return float(fps)


def valid_int(name: str, value, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``[low, high]`` (no upper bound when ``high`` is None); never a bool."""
    bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or (high is not None and value > high):
        raise ValueError(f"{name} must be an int {bounds}, not {value!r}")
    return int(value)


def valid_float(name: str, value, low: float, high: float, *, closed: bool = True) -> float:
    """``value`` as a float in ``[low, high]`` (``(low, high)`` when not ``closed``); never NaN."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ValueError(f"{name} must be a number, not {value!r}")
    inside = low <= value <= high if closed else low < value < high
    if not inside:
        interval = f"[{low}, {high}]" if closed else f"({low}, {high})"
        raise ValueError(f"{name} must be in {interval}, not {value}")
    return float(value)
