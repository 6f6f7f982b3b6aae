"""Small dataset ``.npz`` files the suites upload or name as server files."""

from __future__ import annotations

import io

import numpy as np


def small_npz_bytes(samples: int = 20, features: int = 4) -> bytes:
    """A valid dataset ``.npz`` (x_train, y_train, x_test, y_test; two classes) of a few
    hundred bytes, the same bytes every call."""
    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        x_train=rng.normal(size=(samples, features)).astype(np.float32),
        y_train=np.arange(samples) % 2,
        x_test=rng.normal(size=(6, features)).astype(np.float32),
        y_test=np.arange(6) % 2,
    )
    return buffer.getvalue()
