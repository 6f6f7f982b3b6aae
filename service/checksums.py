"""Objects that must come back intact: size and sha256 recorded at write, checked at read.

Every artifact's digest is taken from the local file before it is uploaded
(:func:`file_digest`) and stored beside its row; a read that uses the bytes checks them on the
way (:func:`get_verified_file` for the worker, :func:`verified_chunks` for downloads), so a
truncated or garbled object raises :class:`CorruptObjectError` instead of being used or served.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .storage import CHUNK_SIZE, Storage, read_chunks

# A verified download is held in memory up to this size, then in a temporary file on disk.
SPOOL_MAX_BYTES = 8 << 20


@dataclass(frozen=True)
class Digest:
    """What an object's bytes must be: its size and sha256 (hex) as recorded when written.

    ``sha256`` is None for objects recorded before checksums were kept: only the size is
    checked for those.
    """

    size: int
    sha256: str | None


class CorruptObjectError(Exception):
    """An object's bytes differ from the size or sha256 recorded when it was written.

    The message says how they differ; it names no key or path (callers add the name).
    """


def file_digest(path: Path) -> Digest:
    """Size and sha256 of a local file, read in chunks (memory: one chunk)."""
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            hasher.update(chunk)
            size += len(chunk)
    return Digest(size=size, sha256=hasher.hexdigest())


def copy_verified(storage: Storage, key: str, expected: Digest, handle: BinaryIO) -> None:
    """Stream the object into ``handle``, hashing on the way; :class:`CorruptObjectError` when
    it is shorter, longer or other than ``expected``. Memory: one chunk."""
    hasher = hashlib.sha256()
    size = 0
    for chunk in storage.iter_bytes(key):
        size += len(chunk)
        if size > expected.size:
            raise CorruptObjectError(f"it is longer than the {expected.size} bytes recorded")
        hasher.update(chunk)
        handle.write(chunk)
    if size != expected.size:
        raise CorruptObjectError(f"it holds {size} of the {expected.size} bytes recorded")
    if expected.sha256 is not None and hasher.hexdigest() != expected.sha256:
        raise CorruptObjectError("its sha256 differs from the one recorded when it was written")


def get_verified_file(storage: Storage, key: str, path: Path, expected: Digest) -> None:
    """Download the object to ``path`` only if it is intact: written beside it, checked, then
    renamed, so ``path`` never holds a damaged or partial copy."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            copy_verified(storage, key, expected, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def verified_chunks(storage: Storage, key: str, expected: Digest) -> Iterator[bytes]:
    """The object's bytes, checked whole before the first one is handed out.

    Answering an HTTP download with a 200 commits to the bytes, so a damaged object must be
    found before streaming starts, on one consistent read: the object is copied (and hashed)
    into a spooled temporary file, then served from it. Cost: one full read of the object
    before the first byte, and a copy of it held in memory up to ``SPOOL_MAX_BYTES``, on local
    disk beyond. Raises ``FileNotFoundError`` or :class:`CorruptObjectError` before any byte.
    """
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_BYTES)  # noqa: SIM115
    try:
        copy_verified(storage, key, expected, spool)
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return read_chunks(spool)
