"""The package's small exception family: one base class, one subclass per kind of bad input."""

from __future__ import annotations


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



class VoiceReferenceError(MserError, ValueError):
    """A collection's voice reference file is missing or malformed, or a collection too small to make one."""
