"""The dataset catalogue: every dataset name the engine knows, without loading any.

Imports no torch, so the API can list datasets and check names at submit. A name is a
built-in (``digits``, bundled with scikit-learn, or a torchvision set read from the data
folder), ``upload:<id>`` (a project's stored upload, service side) or ``npz:<path>`` (a
local file: the CLI, or an operator-allowed server folder).
"""

from __future__ import annotations

from dataclasses import dataclass


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


MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

TORCHVISION_SETS: dict[str, TorchvisionSet] = {
    "mnist": TorchvisionSet(
        "MNIST", "MNIST/raw", MNIST_FILES, (1, 28, 28), 10, (0.1307,), (0.3081,)
    ),
    "fashion_mnist": TorchvisionSet(
        "FashionMNIST", "FashionMNIST/raw", MNIST_FILES, (1, 28, 28), 10, (0.2860,), (0.3530,)
    ),
    "kmnist": TorchvisionSet(
        "KMNIST", "KMNIST/raw", MNIST_FILES, (1, 28, 28), 10, (0.1918,), (0.3483,)
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
    ),
    "cifar100": TorchvisionSet(
        "CIFAR100",
        "cifar-100-python",
        ("train", "test", "meta"),
        (3, 32, 32),
        100,
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
    ),
    "stl10": TorchvisionSet(
        "STL10",
        "stl10_binary",
        ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin"),
        (3, 96, 96),
        10,
        (0.4467, 0.4398, 0.4066),
        (0.2603, 0.2566, 0.2713),
    ),
    "usps": TorchvisionSet(
        "USPS", ".", ("usps.bz2", "usps.t.bz2"), (1, 16, 16), 10, (0.2469,), (0.2989,)
    ),
}

DIGITS_SHAPE, DIGITS_CLASSES = (64,), 10
NPZ_PREFIX = "npz:"


def known_datasets() -> list[str]:
    """Names the registry accepts (plus ``npz:<path>``)."""
    return ["digits", *TORCHVISION_SETS]


UPLOAD_PREFIX = "upload:"
