"""The embedded digits: scikit-learn's rows and split, read without importing scikit-learn."""

import subprocess
import sys

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from noisefa.engine.digits import digits_arrays


def test_the_stored_split_is_scikit_learns_stratified_split_of_its_own_rows():
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data, digits.target, test_size=0.2, random_state=0, stratify=digits.target
    )
    ours = digits_arrays()
    for got, want in zip(ours, (x_train, y_train, x_test, y_test), strict=True):
        assert got.shape == want.shape
        assert np.array_equal(got, want)


def test_loading_digits_imports_no_scikit_learn():
    code = (
        "import sys\n"
        "from noisefa.engine.datasets import load_dataset\n"
        "data = load_dataset('digits')\n"
        "assert len(data.x_train) == 1437, len(data.x_train)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'pandas')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]", done.stdout


def test_digits_that_differ_from_the_fingerprinted_ones_are_refused(tmp_path, monkeypatch):
    import gzip

    from noisefa.engine import digits as digits_module
    from noisefa.engine.contract.errors import DatasetUnavailableError

    with gzip.open(digits_module.digits_csv(), "rt") as source:
        rows = source.read().splitlines()
    first = rows[0].split(",")
    first[10] = str((int(float(first[10])) + 1) % 17)  # one pixel of the first image
    rows[0] = ",".join(first)
    changed = tmp_path / "digits.csv.gz"
    with gzip.open(changed, "wt") as out:
        out.write("\n".join(rows) + "\n")
    monkeypatch.setattr(digits_module, "digits_csv", lambda: changed)
    with pytest.raises(DatasetUnavailableError, match="differ"):
        digits_arrays()
