"""The MNIST family's IDX files (MNIST, Fashion-MNIST, KMNIST), read straight into arrays.

torchvision reads the same files, but importing ``torchvision.datasets`` costs ~2 s (it
pulls in ``torch._dynamo``) and its MNIST class extracts ``.gz`` releases to disk first: for
a short job that was the largest part of start-up. Here the raw file or its ``.gz`` is read
in one pass, its header checked against the size it declares before anything is kept, so a
truncated or oversized file fails with the file's name instead of a reshape error.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .contract.errors import DatasetUnavailableError

UBYTE = 0x08  # the IDX type code of unsigned bytes, the only one the releases use


def idx_file(folder: Path, name: str) -> Path | None:
    """``folder/name``, else its ``.gz`` release, else ``None``."""
    for path in (folder / name, folder / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def read_idx(path: Path, dims: int) -> np.ndarray:
    """The uint8 array of an IDX file of ``dims`` dimensions (raw or ``.gz``).

    Raises :class:`DatasetUnavailableError` naming the file (not its folder) when the
    header is not an unsigned-byte array of ``dims`` dimensions or the data is shorter or
    longer than the header says.
    """
    packed = path.suffix == ".gz"
    try:
        # What the data would unpack to, known before a byte of it is unpacked: the file's
        # size, or a gzip member's trailer (ISIZE: the unpacked size modulo 2**32).
        size = path.stat().st_size
        if packed:
            with path.open("rb") as raw:
                raw.seek(-4, 2)
                size = int.from_bytes(raw.read(4), "little")
        with (gzip.open if packed else open)(path, "rb") as stream:
            return _read(stream, dims, path.name, size, 2**32 if packed else None)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DatasetUnavailableError(f"{path.name} is unreadable: {exc}") from exc


def _read(stream: BinaryIO, dims: int, name: str, stored: int, modulus: int | None) -> np.ndarray:
    """Read the header, check the size it declares against ``stored`` (modulo ``modulus``
    for a gzip trailer) so nothing oversized is allocated, then read the data."""
    header = stream.read(4 + 4 * dims)
    if len(header) < 4 + 4 * dims or header[:2] != b"\0\0" or header[2] != UBYTE:
        raise DatasetUnavailableError(f"{name} is not an IDX file of unsigned bytes")
    if header[3] != dims:
        raise DatasetUnavailableError(f"{name} has {header[3]} dimensions, expected {dims}")
    shape = tuple(int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    size = math.prod(shape)
    declared = len(header) + size
    if (declared % modulus if modulus else declared) != stored:
        raise DatasetUnavailableError(f"{name} does not hold the {shape} bytes its header says")
    data = bytearray(size)  # writable, so torch can share it without a copy or a warning
    if stream.readinto(data) != size or stream.read(1):
        raise DatasetUnavailableError(f"{name} does not hold the {shape} bytes its header says")
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)
