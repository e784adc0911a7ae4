"""Item identity: a recording is its content hash plus the options that analyse it.

The same bytes analysed with the same options give the same ``recording_id`` wherever the file
lives; a changed file, or a changed option, gives a new one (and so a new analysis).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

from ..errors import MediaError
from ..files import sha256_file
from ..options import AnalysisOptions

ID_LENGTH = 16
"""hex digits of a ``recording_id`` (64 bits)."""

RUN_ONLY_OPTIONS = ("threads",)
"""options that change how fast an analysis runs, not its result: left out of the identity."""


@dataclasses.dataclass(frozen=True)
class Item:
    """One input of a batch."""

    path: Path
    sha256: str | None
    """hex sha256 of the file's bytes; None when the file cannot be read."""
    recording_id: str | None
    """:func:`recording_id` of the content and options; None when the file cannot be read."""
    error: str | None = None
    """one line saying why the file cannot be read."""


def options_key(options: AnalysisOptions) -> str:
    """Canonical JSON of the options that decide a result."""
    values = {k: v for k, v in dataclasses.asdict(options).items() if k not in RUN_ONLY_OPTIONS}
    if not values["pack"]:  # results within noise of alone, but not identical; off, ids from before the option stay valid
        del values["pack"]
    if values["voice_reference"] is None:  # off: ids from before the option stay valid
        del values["voice_reference"]
    else:  # the reference's content decides the result, not where it lies
        try:
            values["voice_reference"] = sha256_file(values["voice_reference"])
        except OSError:  # the analysis says what is wrong with it
            pass
    return json.dumps(values, sort_keys=True, default=list)


def recording_id(sha256: str, options: AnalysisOptions) -> str:
    """A ``ID_LENGTH``-hex-digit id of a file's content (its sha256) analysed with ``options``."""
    return hashlib.sha256(f"{sha256}\n{options_key(options)}".encode()).hexdigest()[:ID_LENGTH]


def make_item(path: Path, options: AnalysisOptions) -> Item:
    """Hash ``path`` (read once, in chunks) into an :class:`Item`; an unreadable file gives an
    item with ``error`` set, so the batch can report it and go on."""
    if not path.is_file():
        return Item(path, None, None, str(MediaError(f"{path}: no such file")))
    try:
        digest = sha256_file(path)
    except OSError as e:
        return Item(path, None, None, f"{path}: cannot be read ({e.strerror})")
    return Item(path, digest, recording_id(digest, options))
