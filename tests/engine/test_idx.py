"""MNIST-family IDX files read without torchvision: the same tensors, and bad files named."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from noisefa.engine.contract.catalogue import MNIST_FILES
from noisefa.engine.contract.errors import DatasetUnavailableError
from noisefa.engine.datasets import load_dataset
from noisefa.engine.idx import read_idx


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def write_set(folder: Path, train: int = 20, test: int = 10, *, gz: bool = False) -> Path:
    """A small MNIST-format set (28×28 images, labels 0–9) under ``folder/MNIST/raw``."""
    raw = folder / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(0, 256, (train, 28, 28)),
        rng.integers(0, 10, train),
        rng.integers(0, 256, (test, 28, 28)),
        rng.integers(0, 10, test),
    ]
    for name, array in zip(MNIST_FILES, arrays, strict=True):
        data = idx_bytes(array)
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (raw / name).write_bytes(data)
    return raw


def test_fashion_mnist_is_bitwise_what_torchvision_reads(fashion_data_dir):
    import torchvision.datasets as tv

    tmp_path = fashion_data_dir
    raw = tmp_path / "FashionMNIST" / "raw"
    ours = load_dataset("fashion_mnist", tmp_path)  # from the .gz files, nothing extracted
    assert sorted(p.name for p in raw.iterdir()) == sorted(f"{f}.gz" for f in MNIST_FILES)
    # torchvision extracts the .gz files itself (no network: they are all there).
    reference = tv.FashionMNIST(str(tmp_path), train=True, download=True)
    x = reference.data.unsqueeze(1).float().div_(255.0)
    expected = (x - torch.tensor([0.2860]).view(-1, 1, 1)) / torch.tensor([0.3530]).view(-1, 1, 1)
    assert torch.equal(ours.x_train, expected)
    assert torch.equal(ours.y_train, reference.targets)
    again = load_dataset("fashion_mnist", tmp_path)  # now from the extracted raw files
    assert torch.equal(again.x_test, ours.x_test) and torch.equal(again.y_test, ours.y_test)


@pytest.mark.parametrize("gz", [False, True])
def test_a_small_set_loads_from_raw_or_gz_files(tmp_path, gz):
    write_set(tmp_path, gz=gz)
    data = load_dataset("mnist", tmp_path)
    assert data.x_train.shape == (20, 1, 28, 28) and data.x_test.shape == (10, 1, 28, 28)
    assert data.y_train.dtype == torch.int64 and int(data.y_train.max()) <= 9


def test_loading_the_mnist_family_does_not_import_torchvision(tmp_path):
    write_set(tmp_path)
    code = (
        "import sys; from noisefa.engine.datasets import load_dataset; "
        f"load_dataset('mnist', {str(tmp_path)!r}); print('torchvision' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[:-1], "does not hold"),  # truncated
        (lambda data: data + b"\0", "does not hold"),  # trailing bytes
        (lambda data: b"\0\0\x0d" + data[3:], "not an IDX file of unsigned bytes"),  # floats
        (lambda data: b"\0\0\x08\x02" + data[4:], "2 dimensions, expected 3"),
        (lambda data: data[:6], "not an IDX file"),  # header cut short
    ],
)
def test_a_damaged_image_file_is_refused_by_name(tmp_path, damage, message):
    raw = write_set(tmp_path)
    images = raw / MNIST_FILES[0]
    images.write_bytes(damage(images.read_bytes()))
    with pytest.raises(DatasetUnavailableError, match=message) as caught:
        load_dataset("mnist", tmp_path)
    assert MNIST_FILES[0] in str(caught.value) and str(tmp_path) not in str(caught.value)


def test_a_gz_file_that_is_not_gzip_is_refused_by_name(tmp_path):
    raw = write_set(tmp_path, gz=True)
    (raw / f"{MNIST_FILES[1]}.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DatasetUnavailableError, match=f"{MNIST_FILES[1]}.gz is unreadable"):
        load_dataset("mnist", tmp_path)


def test_labels_must_match_the_images_and_the_classes(tmp_path):
    raw = write_set(tmp_path)
    (raw / MNIST_FILES[1]).write_bytes(idx_bytes(np.zeros(19)))  # 20 images, 19 labels
    with pytest.raises(DatasetUnavailableError, match="20 images .* and 19 labels"):
        load_dataset("mnist", tmp_path)
    (raw / MNIST_FILES[1]).write_bytes(idx_bytes(np.full(20, 10)))  # class 10 of 0–9
    with pytest.raises(DatasetUnavailableError, match="a label is 10, beyond its 10 classes"):
        load_dataset("mnist", tmp_path)


def test_images_of_another_size_are_refused(tmp_path):
    raw = write_set(tmp_path)
    (raw / MNIST_FILES[2]).write_bytes(idx_bytes(np.zeros((10, 32, 32))))
    with pytest.raises(DatasetUnavailableError, match=r"expected one label per \(28, 28\)"):
        load_dataset("mnist", tmp_path)


def test_read_idx_keeps_the_declared_shape(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    path.write_bytes(idx_bytes(np.arange(24).reshape(2, 3, 4)))
    assert read_idx(path, 3).tolist() == np.arange(24).reshape(2, 3, 4).tolist()


def test_a_header_claiming_more_than_the_file_holds_is_refused_before_reading(tmp_path):
    raw = write_set(tmp_path, gz=True)
    huge = bytes([0, 0, 0x08, 3]) + b"".join(n.to_bytes(4, "big") for n in (10**7, 28, 28))
    (raw / f"{MNIST_FILES[0]}.gz").write_bytes(gzip.compress(huge + bytes(28 * 28)))
    with pytest.raises(DatasetUnavailableError, match="does not hold the \\(10000000, 28, 28\\)"):
        load_dataset("mnist", tmp_path)
