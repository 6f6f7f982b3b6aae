"""The real Fashion-MNIST release in ``../shared/data`` (see its README), read for tests and
benchmarks: one idx reader instead of one per suite. Runtime code never reads this folder."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

SHARED_FASHION = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "fashion-mnist"


def read_idx(path: Path) -> np.ndarray:
    """An ``idx-ubyte.gz`` file (uint8 payload) as an array of the shape its header gives."""
    raw = gzip.decompress(path.read_bytes())
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(dims)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """``split`` ("train" or "t10k"): images (N, 28, 28) and labels (N,), both uint8."""
    assert SHARED_FASHION.is_dir(), f"{SHARED_FASHION} (the shared real data) is missing"
    images = read_idx(SHARED_FASHION / f"{split}-images-idx3-ubyte.gz")
    labels = read_idx(SHARED_FASHION / f"{split}-labels-idx1-ubyte.gz")
    return images, labels
