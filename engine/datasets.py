"""Datasets behind one registry: ``digits``, ``npz:<path>`` and torchvision sets by name.

A loaded :class:`Dataset` holds both splits as normalised float tensors on the training
device, so batches are index slices with no host round trip. Torchvision sets are read from
the data folder the caller passes (the settings' ``data_dir``); they are downloaded only when
the caller passes ``download=True``, otherwise a missing set fails with the folder and files
it needs. The engine reads no environment variable: the caller decides both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .contract.catalogue import (
    DIGITS_CLASSES,
    MNIST_FILES,
    NPZ_PREFIX,
    TORCHVISION_SETS,
    builtin_shape,
    known_datasets,
)
from .contract.errors import DatasetUnavailableError
from .digits import digits_arrays
from .idx import idx_file, read_idx
from .npz import read_npz

# A dataset's standardisation statistics: (per-channel means, per-channel stds).
Stats = tuple[tuple[float, ...], tuple[float, ...]]
DIGITS_MAX = 16.0  # scikit-learn's digits count pixels 0–16


@dataclass
class Dataset:
    """Both splits of a dataset, normalised, on one device."""

    name: str
    x_train: torch.Tensor  # (N, *input_shape) float32
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor  # (M, *input_shape) float32
    y_test: torch.Tensor  # (M,) int64
    num_classes: int
    # The standardisation applied to the raw inputs, ``(raw - mean) / std``: one value per
    # image channel, or a single value for every channel (so a checkpoint can record it and
    # an evaluation can undo it). Raw means pixels on a [0, 1] scale for the built-in sets
    # (``digits``' 0–16 counts divided by 16) and an ``.npz`` file's values as stored.
    norm_mean: tuple[float, ...] = (0.0,)
    norm_std: tuple[float, ...] = (1.0,)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def _unknown(name: str) -> DatasetUnavailableError:
    return DatasetUnavailableError(
        f"unknown dataset {name!r}; known: {', '.join(known_datasets())}, or npz:<path>"
    )


def _local_npz(name: str, dataset_files: Mapping[str, Path] | None) -> Path | None:
    """The ``.npz`` behind ``name``: a mapped file (``upload:<id>``) or ``npz:<path>``."""
    if dataset_files is not None and name in dataset_files:
        return Path(dataset_files[name])
    if name.startswith(NPZ_PREFIX):
        return Path(name[len(NPZ_PREFIX) :])
    return None


def _read_named_npz(name: str, path: Path) -> tuple[dict[str, np.ndarray], int]:
    """:func:`read_npz` with the dataset's name in its messages: the name the caller wrote
    (``upload:<id>``, ``npz:<path>``), never the local file an upload was fetched to."""
    try:
        return read_npz(path)
    except DatasetUnavailableError as exc:
        raise DatasetUnavailableError(f"dataset {name!r}: {exc}") from exc


def dataset_info(
    name: str, dataset_files: Mapping[str, Path] | None = None
) -> tuple[tuple[int, ...], int]:
    """``(input_shape, num_classes)`` without loading the data (for noise-only jobs).

    ``dataset_files`` maps names that are not in the registry (the service's ``upload:<id>``)
    to local ``.npz`` files, read like ``npz:<path>``.
    """
    npz = _local_npz(name, dataset_files)
    if npz is not None:
        arrays, num_classes = _read_named_npz(name, npz)
        return tuple(arrays["x_train"].shape[1:]), num_classes
    if name in known_datasets():
        return builtin_shape(name)
    raise _unknown(name)


def load_dataset(
    name: str,
    data_dir: Path | str | None = None,
    device: str | torch.device = "cpu",
    dataset_files: Mapping[str, Path] | None = None,
    *,
    download: bool = False,
) -> Dataset:
    """Load a dataset by registry name (or from ``dataset_files``), normalised, onto ``device``.

    Torchvision sets are read from ``data_dir`` (required for them) and fetched from the
    network only when ``download`` is true.
    """
    npz = _local_npz(name, dataset_files)
    if npz is not None:
        arrays, num_classes = _read_named_npz(name, npz)
        x_train, x_test, stats = _standardise(
            torch.from_numpy(arrays["x_train"].astype(np.float32)),
            torch.from_numpy(arrays["x_test"].astype(np.float32)),
        )
        y_train = torch.from_numpy(arrays["y_train"].astype(np.int64))
        y_test = torch.from_numpy(arrays["y_test"].astype(np.int64))
    elif name == "digits":
        x_train, y_train, x_test, y_test, stats = _load_digits()
        num_classes = DIGITS_CLASSES
    elif name in TORCHVISION_SETS:
        if data_dir is None:
            raise DatasetUnavailableError(
                f"dataset {name!r} is read from a data folder, and none was given "
                "(set --data-dir or NOISEFA_DATA_DIR)"
            )
        x_train, y_train, x_test, y_test = _load_torchvision(name, Path(data_dir), download)
        num_classes = TORCHVISION_SETS[name].num_classes
        stats = (TORCHVISION_SETS[name].mean, TORCHVISION_SETS[name].std)
    else:
        raise _unknown(name)
    return Dataset(
        name=name,
        x_train=x_train.to(device),
        y_train=y_train.to(device),
        x_test=x_test.to(device),
        y_test=y_test.to(device),
        num_classes=num_classes,
        norm_mean=tuple(stats[0]),
        norm_std=tuple(stats[1]),
    )


def _standardise(
    x_train: torch.Tensor, x_test: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, Stats]:
    """Zero mean, unit std with the training split's statistics (test uses the same); the
    statistics are returned as ``((mean,), (std,))``, one value for every channel."""
    mean, std = x_train.mean(), x_train.std().clamp_min(1e-8)
    return (x_train - mean) / std, (x_test - mean) / std, ((mean.item(),), (std.item(),))


def _load_digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Stats]:
    """The 8×8 digits with their fixed stratified 80/20 split (:mod:`.digits`), and their
    statistics on the [0, 1] scale (the tensors are standardised from the 0–16 counts, which
    gives the same values)."""
    x_tr, y_tr, x_te, y_te = digits_arrays()
    x_train, x_test, stats = _standardise(
        torch.from_numpy(x_tr.astype(np.float32)), torch.from_numpy(x_te.astype(np.float32))
    )
    (mean,), (std,) = stats
    stats = ((mean / DIGITS_MAX,), (std / DIGITS_MAX,))
    return x_train, torch.from_numpy(y_tr), x_test, torch.from_numpy(y_te), stats


def _missing_message(name: str, folder: Path, files: list[str]) -> str:
    return (
        f"dataset {name!r} not found: expected {', '.join(files)} in {folder} "
        "(set --data-dir or NOISEFA_DATA_DIR to the folder holding it, "
        "or NOISEFA_DOWNLOAD=1 where the network allows)"
    )


def _load_torchvision(name: str, data_dir: Path, download: bool) -> tuple[torch.Tensor, ...]:
    """A torchvision set from ``data_dir`` as normalised tensors (no PIL, no per-sample loop);
    fetched from the network first when ``download`` is true. The MNIST family, when its
    files (or their ``.gz`` releases) are all there, is read by :mod:`.idx` without
    importing torchvision."""
    entry = TORCHVISION_SETS[name]
    folder = data_dir / entry.folder
    if entry.files == MNIST_FILES and not download:
        paths = [idx_file(folder, f) for f in entry.files]
        if None in paths:
            missing = [f"{f}(.gz)" for f, path in zip(entry.files, paths, strict=True) if not path]
            raise DatasetUnavailableError(_missing_message(name, folder, missing))
        return _load_idx(name, paths)
    present = [f for f in entry.files if (folder / f).is_file()]
    if len(present) < len(entry.files) and not download:
        missing = [f for f in entry.files if f not in present]
        raise DatasetUnavailableError(_missing_message(name, folder, missing))
    import torchvision.datasets as tv

    cls = getattr(tv, entry.class_name)
    try:
        if name == "stl10":
            splits = (cls(str(data_dir), split=s, download=download) for s in ("train", "test"))
        else:
            splits = (cls(str(data_dir), train=t, download=download) for t in (True, False))
        train, test = splits
    except (RuntimeError, OSError, ValueError) as exc:
        raise DatasetUnavailableError(f"dataset {name!r} in {folder} is unreadable: {exc}") from exc
    tensors = []
    for ds in (train, test):
        labels = ds.labels if name == "stl10" else ds.targets
        tensors += [
            _normalised(name, ds.data),
            torch.as_tensor(np.asarray(labels), dtype=torch.int64),
        ]
    return tuple(tensors)


def _load_idx(name: str, paths: list[Path]) -> tuple[torch.Tensor, ...]:
    """Train and test images and labels of an MNIST-family set from its four IDX files
    (:data:`MNIST_FILES` order), checked against the set's image shape and classes."""
    entry = TORCHVISION_SETS[name]
    train_x, train_y, test_x, test_y = (
        read_idx(path, 3 if k % 2 == 0 else 1) for k, path in enumerate(paths)
    )
    splits = []
    for images, labels in ((train_x, train_y), (test_x, test_y)):
        if images.shape[1:] != entry.input_shape[1:] or len(labels) != len(images):
            raise DatasetUnavailableError(
                f"dataset {name!r}: {len(images)} images of {images.shape[1:]} and "
                f"{len(labels)} labels, expected one label per {entry.input_shape[1:]} image"
            )
        if labels.size and int(labels.max()) >= entry.num_classes:
            raise DatasetUnavailableError(
                f"dataset {name!r}: a label is {int(labels.max())}, beyond its "
                f"{entry.num_classes} classes"
            )
        splits += [_normalised(name, images), torch.from_numpy(labels.astype(np.int64))]
    return tuple(splits)


def _normalised(name: str, data) -> torch.Tensor:
    """A set's raw uint8 images as NCHW float32, standardised by its published statistics
    (``(pixel / 255 - mean) / std`` per channel), computed in place."""
    entry = TORCHVISION_SETS[name]
    x = torch.as_tensor(np.asarray(data))
    if name in ("cifar10", "cifar100"):
        x = x.permute(0, 3, 1, 2)  # stored NHWC
    elif x.ndim == 3:
        x = x.unsqueeze(1)  # grey: (N, H, W) -> (N, 1, H, W)
    x = x.float().div_(255.0).contiguous()
    mean = torch.tensor(entry.mean).view(-1, 1, 1)
    std = torch.tensor(entry.std).view(-1, 1, 1)
    return x.sub_(mean).div_(std)
