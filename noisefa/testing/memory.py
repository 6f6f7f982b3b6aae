"""A process's memory as Linux counts it, and the compressed archives that test it.

Used by the upload bomb test and ``benchmarks/upload_bomb.py``: read a server's resident set
and its peak (``/proc/<pid>/status``), reset the peak before a request, and build a
``np.savez_compressed`` archive that declares far more than it weighs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FEATURES = 64


@dataclass(frozen=True)
class Memory:
    """Resident bytes now and at the peak since the last reset."""

    rss: int
    peak: int


def memory_of(pid: int) -> Memory:
    """``VmRSS`` and ``VmHWM`` of ``pid``, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024  # kB
    return Memory(rss=fields["VmRSS"], peak=fields["VmHWM"])


def reset_peak(pid: int) -> None:
    """Make ``VmHWM`` start again from the current resident set (Linux ``clear_refs`` 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def zeros_npz(path: Path, train_bytes: int, classes: int = 2) -> Path:
    """A valid dataset whose ``x_train`` is ``train_bytes`` of float32 zeros (rows of
    :data:`FEATURES`), written with ``np.savez_compressed``: ~1000× smaller than it unpacks.

    The zeros are never touched in this process (``np.zeros`` maps them lazily; ``savez``
    writes them in buffered chunks), so building a gigabyte bomb costs seconds, not memory.
    """
    rows = max(train_bytes // (4 * FEATURES), 1)
    np.savez_compressed(
        path,
        x_train=np.zeros((rows, FEATURES), np.float32),
        y_train=np.arange(rows, dtype=np.int64) % classes,
        x_test=np.zeros((8, FEATURES), np.float32),
        y_test=np.arange(8, dtype=np.int64) % classes,
    )
    return path
