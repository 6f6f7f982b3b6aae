"""Ways a stored file gets damaged, done to a local file in place: what disks, copies cut
short and bad transfers do to checkpoints and other artifacts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def truncate(path: Path) -> None:
    """Cut the file to half its length (an interrupted copy)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garble_tail(path: Path) -> None:
    """Flip the bits of 64 bytes near the end, keeping the size (a bad sector in the data)."""
    data = bytearray(path.read_bytes())
    start = max(len(data) - 100, 0)
    for index in range(start, min(start + 64, len(data))):
        data[index] ^= 0xFF
    path.write_bytes(bytes(data))


def garble_head(path: Path) -> None:
    """Overwrite bytes 8..40 with 0xFF, keeping the size (a broken header)."""
    data = bytearray(path.read_bytes())
    data[8:40] = b"\xff" * len(data[8:40])
    path.write_bytes(bytes(data))


def empty(path: Path) -> None:
    """Leave a zero-byte file (a write that never happened)."""
    path.write_bytes(b"")


DAMAGES: dict[str, Callable[[Path], None]] = {
    "truncated": truncate,
    "garbled-data": garble_tail,
    "garbled-header": garble_head,
    "empty": empty,
}
"""Every kind of damage above, by name (for ``pytest.mark.parametrize``)."""
