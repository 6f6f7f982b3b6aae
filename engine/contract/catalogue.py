"""The dataset catalogue: every dataset name the engine knows, without loading any.

Imports no torch, so the API can list datasets and check names at submit. A name is a
built-in (``digits``, bundled with scikit-learn, or a torchvision set read from the data
folder), ``upload:<id>`` (a project's stored upload, service side) or ``npz:<path>`` (a
local file: the CLI, or an operator-allowed server folder).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


@dataclass(frozen=True)
class TorchvisionSet:
    """Where a torchvision set lives under the data folder and how to normalise it."""

    class_name: str
    folder: str  # relative to the data folder
    files: tuple[str, ...]  # relative to ``folder``; what must exist to load without network
    input_shape: tuple[int, ...]
    num_classes: int
    # Per-channel mean/std of the training split in [0, 1] (published values).
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # Samples per split (the published releases), for resource estimates at submit.
    train_size: int
    test_size: int

    @property
    def paths(self) -> tuple[PurePosixPath, ...]:
        """:attr:`files` relative to the data folder."""
        return tuple(PurePosixPath(self.folder) / name for name in self.files)


MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

TORCHVISION_SETS: dict[str, TorchvisionSet] = {
    "mnist": TorchvisionSet(
        "MNIST", "MNIST/raw", MNIST_FILES, (1, 28, 28), 10, (0.1307,), (0.3081,), 60_000, 10_000
    ),
    "fashion_mnist": TorchvisionSet(
        "FashionMNIST",
        "FashionMNIST/raw",
        MNIST_FILES,
        (1, 28, 28),
        10,
        (0.2860,),
        (0.3530,),
        60_000,
        10_000,
    ),
    "kmnist": TorchvisionSet(
        "KMNIST", "KMNIST/raw", MNIST_FILES, (1, 28, 28), 10, (0.1918,), (0.3483,), 60_000, 10_000
    ),
    "cifar10": TorchvisionSet(
        "CIFAR10",
        "cifar-10-batches-py",
        (
            "data_batch_1",
            "data_batch_2",
            "data_batch_3",
            "data_batch_4",
            "data_batch_5",
            "test_batch",
            "batches.meta",
        ),
        (3, 32, 32),
        10,
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        50_000,
        10_000,
    ),
    "cifar100": TorchvisionSet(
        "CIFAR100",
        "cifar-100-python",
        ("train", "test", "meta"),
        (3, 32, 32),
        100,
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        50_000,
        10_000,
    ),
    "stl10": TorchvisionSet(
        "STL10",
        "stl10_binary",
        ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"),
        (3, 96, 96),
        10,
        (0.4467, 0.4398, 0.4066),
        (0.2603, 0.2566, 0.2713),
        5_000,  # the labelled train split (the unlabelled 100k are not loaded)
        8_000,
    ),
    "usps": TorchvisionSet(
        "USPS", ".", ("usps.bz2", "usps.t.bz2"), (1, 16, 16), 10, (0.2469,), (0.2989,), 7_291, 2_007
    ),
}

DIGITS_SHAPE, DIGITS_CLASSES = (64,), 10
# scikit-learn's 1797 images under the engine's fixed stratified 80/20 split.
DIGITS_TRAIN_SIZE, DIGITS_TEST_SIZE = 1437, 360
NPZ_PREFIX = "npz:"


def known_datasets() -> list[str]:
    """Names the registry accepts (plus ``npz:<path>``)."""
    return ["digits", *TORCHVISION_SETS]


def builtin_shape(name: str) -> tuple[tuple[int, ...], int]:
    """``(input_shape, num_classes)`` of built-in ``name`` (one of :func:`known_datasets`)."""
    if name == "digits":
        return DIGITS_SHAPE, DIGITS_CLASSES
    entry = TORCHVISION_SETS[name]
    return entry.input_shape, entry.num_classes


def builtin_split_sizes(name: str) -> tuple[int, int]:
    """``(train_size, test_size)`` of built-in ``name``, as the engine loads its splits."""
    if name == "digits":
        return DIGITS_TRAIN_SIZE, DIGITS_TEST_SIZE
    entry = TORCHVISION_SETS[name]
    return entry.train_size, entry.test_size


def builtin_files(name: str) -> tuple[PurePosixPath, ...]:
    """The files built-in ``name`` needs under the data folder to load without network
    (none for ``digits``, which scikit-learn bundles)."""
    return () if name == "digits" else TORCHVISION_SETS[name].paths


UPLOAD_PREFIX = "upload:"


def builtins_on_disk(data_dir: Path) -> set[str]:
    """Built-in names the engine can load from ``data_dir`` without network (``digits``
    always; an MNIST-like set also from its release's ``.gz`` files, as the engine does)."""

    def complete(paths: Sequence[Path]) -> bool:
        return all((data_dir / path).is_file() for path in paths)

    found = set()
    for name in known_datasets():
        files = [Path(path) for path in builtin_files(name)]
        gz_release = name in TORCHVISION_SETS and TORCHVISION_SETS[name].files == MNIST_FILES
        if complete(files) or (
            gz_release and complete([p.with_name(f"{p.name}.gz") for p in files])
        ):
            found.add(name)
    return found
