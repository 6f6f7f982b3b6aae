"""The embedded default dataset: scikit-learn's 8×8 digits, read without importing sklearn.

``sklearn.datasets.load_digits`` costs ~1.5 s of imports (scikit-learn, SciPy, pandas) for a
57 KB CSV, and every ``noisefa demo``, CLI run and first digits job in a worker paid it. The
rows come from the CSV that scikit-learn installs (``sklearn/datasets/data/digits.csv.gz``),
parsed as ``load_digits`` parses it; the fixed stratified 80/20 split is stored beside this
module (``data/digits_split.npy``: the train indices, then the test indices), as
``train_test_split(np.arange(1797), target, test_size=0.2, random_state=0, stratify=target)``
made it, so it cannot move with a scikit-learn release either, and the rows in that order
are checked against :data:`FINGERPRINT` at every load, so a changed CSV fails loudly instead
of moving every digits result. ``tests/engine/test_digits.py`` checks both against
scikit-learn itself.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from pathlib import Path

import numpy as np

from .contract.catalogue import DIGITS_TEST_SIZE, DIGITS_TRAIN_SIZE
from .contract.errors import DatasetUnavailableError

SPLIT_FILE = Path(__file__).with_name("data") / "digits_split.npy"
# sha256 over the bytes of x_train (float64), y_train (int64), x_test, y_test, in that order.
FINGERPRINT = "548fe26f3cd3d6d49f8755c9ce2f1b45af90bcb23654d720818942358647cf67"


def digits_csv() -> Path:
    """Where the installed scikit-learn keeps the digits CSV (found, not imported)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetUnavailableError("dataset 'digits' needs scikit-learn, which is not installed")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise DatasetUnavailableError(
            "dataset 'digits': the installed scikit-learn has no digits.csv.gz"
        )
    return path


def digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)``: pixel counts 0–16 (float64, as scikit-learn
    gives them) and class indices, in the stored split's order."""
    with gzip.open(digits_csv(), "rt", encoding="utf-8") as rows:
        table = np.loadtxt(rows, delimiter=",")
    x, y = table[:, :-1], table[:, -1].astype(np.int64)
    order = np.load(SPLIT_FILE, allow_pickle=False).astype(np.int64)
    if order.shape != (len(y),) or len(y) != DIGITS_TRAIN_SIZE + DIGITS_TEST_SIZE:
        raise DatasetUnavailableError(
            f"dataset 'digits': {len(y)} rows, where the stored split has {order.size}"
        )
    train, test = order[:DIGITS_TRAIN_SIZE], order[DIGITS_TRAIN_SIZE:]
    arrays = (x[train], y[train], x[test], y[test])
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    if digest.hexdigest() != FINGERPRINT:
        raise DatasetUnavailableError(
            "dataset 'digits': the installed scikit-learn's digits differ from the ones "
            "noisefa's results were made with"
        )
    return arrays
