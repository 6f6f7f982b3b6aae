"""Reading a dataset ``.npz`` (x_train, y_train, x_test, y_test[, num_classes]), validated.

Numpy only (no torch), so the API can check an upload without loading the training stack.
Object arrays are refused: nothing is ever unpickled.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .contract.errors import DatasetUnavailableError


def read_npz(path: Path) -> tuple[dict[str, np.ndarray], int]:
    """Arrays of an uploaded ``.npz``, validated; refuses pickled (object) arrays.

    Messages say what is wrong with the arrays and nothing of the file's place or other
    contents (no path, no list of its members): the file may be a server's, the reader a
    remote caller. Callers prefix the dataset's name.
    """
    if not path.is_file():
        raise DatasetUnavailableError("npz file not found")
    required = ("x_train", "y_train", "x_test", "y_test")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in required if key not in npz.files]
            if missing:
                raise DatasetUnavailableError(
                    f"missing arrays {missing}; expected {list(required)}"
                )
            arrays = {key: npz[key] for key in required}
            extra = npz["num_classes"] if "num_classes" in npz.files else None
    except DatasetUnavailableError:
        raise
    except ValueError as exc:
        raise DatasetUnavailableError(
            "unreadable without pickle; arrays must be plain numeric arrays, "
            "object arrays are refused"
        ) from exc
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetUnavailableError("not a valid .npz file") from exc
    return arrays, _validate_arrays(arrays, extra)


def _validate_arrays(arrays: dict[str, np.ndarray], extra: np.ndarray | None) -> int:
    """Check dtypes, shapes, finiteness and labels; return the class count."""
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype.kind not in "fiu":
            raise DatasetUnavailableError(f"x_{split} must be a numeric array, got dtype {x.dtype}")
        if y.dtype.kind not in "iu":
            raise DatasetUnavailableError(
                f"y_{split} must hold integer labels, got dtype {y.dtype}"
            )
        if x.ndim < 2 or x.shape[0] == 0:
            raise DatasetUnavailableError(
                f"x_{split} must have shape (N, ...) with N ≥ 1, got {x.shape}"
            )
        if y.shape != (x.shape[0],):
            raise DatasetUnavailableError(
                f"y_{split} must have shape ({x.shape[0]},) to match x_{split}, got {y.shape}"
            )
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise DatasetUnavailableError(f"x_{split} holds NaN or infinite values")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise DatasetUnavailableError(
            f"x_train samples have shape {arrays['x_train'].shape[1:]} but x_test "
            f"samples {arrays['x_test'].shape[1:]}"
        )
    if extra is not None:
        if extra.dtype.kind not in "iu" or extra.size != 1 or int(extra) < 1:
            raise DatasetUnavailableError("num_classes must be one positive integer")
        num_classes = int(extra)
    else:
        num_classes = int(arrays["y_train"].max()) + 1
    for split in ("train", "test"):
        y = arrays[f"y_{split}"]
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= num_classes:
            raise DatasetUnavailableError(
                f"y_{split} labels must be in [0, {num_classes}), got [{low}, {high}]"
            )
    return num_classes
