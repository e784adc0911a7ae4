"""The package's small exception family: one base class, one subclass per kind of bad input; and
the ``valid_*`` helpers several modules share."""

from __future__ import annotations

import numbers


class MserError(Exception):
    """Base class of every error this package raises on purpose."""


class MediaError(MserError, ValueError):
    """A media file is missing, unreadable, empty, truncated or lacks the stream asked for."""


class TranscriptError(MserError, ValueError):
    """A transcript file cannot be parsed or does not fit the media it belongs to."""


class ManifestError(MserError, ValueError):
    """A labelled manifest is malformed."""


class ModelError(MserError, RuntimeError):
    """Model weights are missing, corrupt (checksum mismatch) or incompatible."""


def valid_positive_int(name: str, value, low: int = 1) -> int:
    """``value`` as an int, checked to be an integer (not a bool) and at least ``low``.

    Raises:
        ValueError: "``name`` must be an int >= ``low``, not ``value``".
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, not {value!r}")
    return int(value)
