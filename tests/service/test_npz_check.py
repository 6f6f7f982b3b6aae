"""The upload checker against hostile and honest archives, without a server: sizes and
headers refuse a bomb before anything is unpacked, values are checked chunk by chunk (a bad
value in the last chunk is found), and what it accepts the engine's reader loads the same."""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from noisefa.engine.npz import read_npz
from noisefa.service.npz_check import (
    CHUNK_BYTES,
    MAX_DIRECTORY_BYTES,
    InvalidUpload,
    NpzLimits,
    check_npz,
)

LIMITS = NpzLimits(max_uncompressed_bytes=20_000_000, max_compression_ratio=200, max_classes=50)


def arrays(n_train: int = 20, n_test: int = 6, classes: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.random((n_train, 4), dtype=np.float32),
        "y_train": np.arange(n_train) % classes,
        "x_test": rng.random((n_test, 4), dtype=np.float32),
        "y_test": np.arange(n_test) % classes,
    }


def saved(tmp_path: Path, compressed: bool = False, **named: np.ndarray) -> Path:
    path = tmp_path / "set.npz"
    (np.savez_compressed if compressed else np.savez)(path, **named)
    return path


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def refusal(path: Path, limits: NpzLimits = LIMITS) -> InvalidUpload:
    with pytest.raises(InvalidUpload) as caught:
        check_npz(path, limits)
    return caught.value


@pytest.mark.parametrize("compressed", [False, True], ids=["stored", "deflated"])
def test_an_honest_upload_is_described_as_the_engine_reads_it(tmp_path, compressed):
    path = saved(tmp_path, compressed, **arrays(), num_classes=np.int64(5))
    info = check_npz(path, LIMITS)
    loaded, classes = read_npz(path)
    assert info.num_classes == classes == 5
    assert info.input_shape == list(loaded["x_train"].shape[1:]) == [4]
    assert (info.train_size, info.test_size) == (20, 6)


def test_a_bomb_is_refused_by_its_declared_size_before_it_is_unpacked(tmp_path):
    big = np.zeros((LIMITS.max_uncompressed_bytes // 4 // 64 + 1, 64), np.float32)
    path = saved(tmp_path, True, **arrays() | {"x_train": big})
    error = refusal(path)
    assert (error.status, error.field) == (413, "max_upload_uncompressed_bytes")
    assert "x_train.npy" in error.message


def test_members_under_the_limit_each_are_refused_over_it_together(tmp_path):
    half = np.ones((LIMITS.max_uncompressed_bytes // 4 // 2 // 4 + 1, 4), np.float32)
    path = saved(tmp_path, **arrays() | {"x_train": half, "x_test": half})
    error = refusal(path)
    assert (error.status, error.field) == (413, "max_upload_uncompressed_bytes")


def test_a_member_packed_past_the_ratio_is_refused(tmp_path):
    zeros = np.zeros((2 * CHUNK_BYTES // 16, 4), np.float32)  # 2 MiB of zeros packs ~1000×
    path = saved(tmp_path, True, **arrays() | {"x_train": zeros})
    error = refusal(path)
    assert (error.status, error.field) == (413, "max_upload_compression_ratio")


def write_zip(path: Path, members: list[tuple[str, bytes]], method=zipfile.ZIP_STORED) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of duplicate names; that is the test
        with zipfile.ZipFile(path, "w", compression=method) as archive:
            for name, data in members:
                archive.writestr(name, data)
    return path


def members_of(named: dict[str, np.ndarray]) -> list[tuple[str, bytes]]:
    return [(f"{name}.npy", npy_bytes(array)) for name, array in named.items()]


def test_a_header_that_disagrees_with_the_member_size_is_refused(tmp_path):
    good = members_of(arrays())
    header_only = npy_bytes(np.zeros((10**6, 4), np.float32))[:128]  # claims 16 MB, holds 0
    path = write_zip(tmp_path / "lie.npz", [("x_train.npy", header_only), *good[1:]])
    error = refusal(path)
    assert (error.status, error.field) == (422, "x_train")


def test_a_crc_mismatch_is_found_while_streaming(tmp_path):
    path = write_zip(tmp_path / "set.npz", members_of(arrays()))
    data = bytearray(path.read_bytes())
    spot = data.find(npy_bytes(arrays()["y_train"])[-8:])
    data[spot] ^= 0xFF  # flip a label byte inside the stored member
    path.write_bytes(bytes(data))
    error = refusal(path)
    assert error.field == "y_train" and "CRC" in error.message


def test_members_that_could_unpack_without_bound_or_hide_are_refused(tmp_path):
    bzip2 = write_zip(tmp_path / "bz.npz", members_of(arrays()), method=zipfile.ZIP_BZIP2)
    assert refusal(bzip2).field == "x_train"
    twice = write_zip(tmp_path / "dup.npz", [*members_of(arrays()), members_of(arrays())[0]])
    assert refusal(twice).field == "file"


def test_a_directory_of_very_many_members_is_refused_before_zipfile_parses_it(tmp_path):
    many = [(f"m{i}", b"") for i in range(MAX_DIRECTORY_BYTES // 40)]
    path = write_zip(tmp_path / "many.npz", [*members_of(arrays()), *many])
    error = refusal(path)
    assert error.field == "file" and "directory" in error.message


def test_a_bad_value_in_the_last_chunk_is_found(tmp_path):
    rows = 3 * CHUNK_BYTES // 16  # three chunks of float32 rows of 4
    x = np.ones((rows, 4), np.float32)
    x[-1, -1] = np.inf
    named = arrays() | {"x_train": x, "y_train": np.zeros(rows, np.int64)}
    assert refusal(saved(tmp_path, **named)).field == "x_train"
    y = np.zeros(rows, np.int64)
    y[-1] = 7
    named = arrays() | {"x_train": np.ones((rows, 4), np.float32), "y_train": y}
    path = saved(tmp_path, **named, num_classes=np.int64(3))
    error = refusal(path)
    assert error.field == "y_train" and "got [0, 7]" in error.message


CANNOT_TRAIN = {
    "label-at-num-classes": (arrays() | {"num_classes": np.int64(2)}, "y_train"),
    "test-label-past-train-classes": (arrays() | {"y_test": np.full(6, 3)}, "y_test"),
    "num-classes-over-max": (arrays() | {"num_classes": np.int64(51)}, "num_classes"),
    "labels-over-max": (arrays() | {"y_train": np.arange(20) * 3}, "y_train"),
    "zero-size-feature": (
        arrays() | {"x_train": np.ones((20, 0)), "x_test": np.ones((6, 0))},
        "x_train",
    ),
    "empty-test-split": (
        arrays() | {"x_test": np.ones((0, 4)), "y_test": np.zeros(0, np.int64)},
        "x_test",
    ),
    "object-labels": (arrays() | {"y_test": np.array([{"a": 1}] * 6, object)}, "y_test"),
    "structured-features": (arrays() | {"x_train": np.zeros((20, 4), "f4,f4")}, "x_train"),
    "missing-array": ({k: v for k, v in arrays().items() if k != "y_test"}, "y_test"),
}


@pytest.mark.parametrize("case", CANNOT_TRAIN)
def test_what_a_job_could_not_train_on_is_a_422_naming_the_array(tmp_path, case):
    named, field = CANNOT_TRAIN[case]
    error = refusal(saved(tmp_path, **named))
    assert (error.status, error.field) == (422, field)
