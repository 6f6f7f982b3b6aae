"""The dataset registry: digits, validated npz uploads, torchvision sets from a data folder."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from noisefa.engine.contract.errors import DatasetUnavailableError
from noisefa.engine.datasets import dataset_info, load_dataset


def test_digits_has_a_fixed_stratified_split_normalised_on_the_train_split():
    data = load_dataset("digits")
    assert data.x_train.shape == (1437, 64) and data.x_test.shape == (360, 64)
    assert data.num_classes == 10 and data.input_shape == (64,)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.x_train.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert data.x_train.std().item() == pytest.approx(1.0, abs=1e-3)
    counts = torch.bincount(data.y_test, minlength=10)
    assert counts.min().item() >= 35 and counts.max().item() <= 37
    assert torch.equal(load_dataset("digits").y_test, data.y_test)
    assert dataset_info("digits") == ((64,), 10)


def write_npz(path: Path, **overrides) -> str:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.normal(size=(20, 3, 4)).astype(np.float32),
        "y_train": rng.integers(0, 3, size=20),
        "x_test": rng.normal(size=(6, 3, 4)).astype(np.float32),
        "y_test": rng.integers(0, 3, size=6),
    }
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return f"npz:{path}"


def test_a_valid_npz_loads_with_its_shape_and_class_count(tmp_path):
    name = write_npz(tmp_path / "ok.npz", y_train=np.arange(20) % 3)
    data = load_dataset(name)
    assert data.input_shape == (3, 4) and data.num_classes == 3
    assert dataset_info(name) == ((3, 4), 3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"x_train": np.array([{"a": 1}] * 20, dtype=object)}, "object arrays are refused"),
        ({"y_train": np.zeros(19, dtype=np.int64)}, "y_train must have shape (20,)"),
        ({"x_test": np.zeros((6, 4, 3), dtype=np.float32)}, "x_test samples"),
        ({"x_train": np.full((20, 3, 4), np.nan, dtype=np.float32)}, "NaN"),
        ({"y_test": np.array([0, 1, 2, 3, 0, 1])}, "labels must be in [0, 3)"),
        ({"y_train": -np.ones(20, dtype=np.int64)}, "labels must be in"),
        ({"y_train": np.zeros(20, dtype=np.float32)}, "integer labels"),
        ({"x_train": np.array(["a"] * 20)}, "numeric array"),
        ({"y_test": None}, "missing arrays ['y_test']"),
    ],
)
def test_bad_npz_files_are_refused_with_a_clear_message(tmp_path, overrides, message):
    if "y_test" not in overrides:
        overrides = {"y_train": np.arange(20) % 3, **overrides}
    name = write_npz(tmp_path / "bad.npz", **overrides)
    with pytest.raises(DatasetUnavailableError, match="bad.npz") as info:
        load_dataset(name)
    assert message in str(info.value)


def test_a_pickle_renamed_to_npz_is_never_unpickled(tmp_path):
    path = tmp_path / "evil.npz"
    path.write_bytes(pickle.dumps({"x_train": [1, 2, 3]}))
    with pytest.raises(DatasetUnavailableError, match="evil.npz"):
        load_dataset(f"npz:{path}")


def test_unknown_and_missing_datasets_fail_with_dataset_unavailable(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")
    with pytest.raises(DatasetUnavailableError, match="not found"):
        load_dataset(f"npz:{tmp_path / 'absent.npz'}")


def test_a_missing_torchvision_set_names_the_folder_and_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("NOISEFA_DOWNLOAD", "1")  # the engine reads no environment variable
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("cifar10", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "data_batch_1" in message and "test_batch" in message
    with pytest.raises(DatasetUnavailableError, match="train-images-idx3-ubyte"):
        load_dataset("mnist", tmp_path)


def test_a_torchvision_set_without_a_data_folder_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("NOISEFA_DATA_DIR", str(tmp_path))  # ignored: the caller passes it
    with pytest.raises(DatasetUnavailableError, match="none was given"):
        load_dataset("mnist")


def test_fashion_mnist_loads_from_a_data_folder_of_release_files(fashion_data_dir):
    data = load_dataset("fashion_mnist", fashion_data_dir)
    assert data.x_train.shape == (60_000, 1, 28, 28) and data.x_test.shape == (10_000, 1, 28, 28)
    assert torch.equal(torch.bincount(data.y_test), torch.full((10,), 1000))
    assert data.x_train.mean().item() == pytest.approx(0.0, abs=0.01)
    assert data.x_train.std().item() == pytest.approx(1.0, abs=0.01)
    assert dataset_info("fashion_mnist") == ((1, 28, 28), 10)
