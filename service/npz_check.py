"""Checking an uploaded ``.npz`` without trusting it: sizes first, values in bounded chunks.

A compressed archive can declare gigabytes behind a few kilobytes (``np.savez_compressed`` of
zeros packs 1 GB into ~1 MB), so nothing here unpacks a member whole. In order:

1. the zip's central directory is bounded before :mod:`zipfile` reads it into objects;
2. every member's *declared* size (``ZipInfo.file_size``) and compression ratio are checked
   against the deployment's limits, and only stored or deflated members are accepted (a
   bzip2 or lzma member can unpack without bound in one decompressor call);
3. each array's ``.npy`` header alone gives its dtype and shape: object dtypes are refused,
   and the byte size they imply must equal the declared size;
4. only then is each array read, one chunk of at most :data:`CHUNK_BYTES` at a time, to
   check that floats are finite, labels are in range and the data is what its CRC says.

What passes is exactly what the engine's reader (``noisefa.engine.npz.read_npz``) accepts,
plus what a job could not train on (labels past ``num_classes``, too many classes, a zero-size
feature dimension, an empty split), so a stored upload always loads in a worker, whose memory
it then needs at most ``max_upload_uncompressed_bytes`` of.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

CHUNK_BYTES = 1 << 20
"""Most bytes of one array held in memory while its values are checked."""

# A dataset archive has a handful of members; its directory is well under this. Bounding it
# bounds the ZipInfo objects ``zipfile`` builds (one per entry, whatever the entry count).
MAX_DIRECTORY_BYTES = 64 * 1024
ACCEPTED_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)
ENCRYPTED_FLAG = 0x1

SPLITS = ("train", "test")
REQUIRED = ("x_train", "y_train", "x_test", "y_test")
NUM_CLASSES = "num_classes"


class InvalidUpload(ValueError):
    """An upload refused; ``field`` names the array (or ``file``, or the limit it broke) and
    ``status`` is the HTTP status: 413 for a size limit, 422 for a bad dataset."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.status = status


@dataclass(frozen=True)
class UploadInfo:
    """What validation learnt about an upload."""

    input_shape: list[int]
    num_classes: int
    train_size: int
    test_size: int


@dataclass(frozen=True)
class NpzLimits:
    """The deployment's bounds on one upload (from its settings)."""

    max_uncompressed_bytes: int
    max_compression_ratio: float
    max_classes: int


@dataclass(frozen=True)
class ArrayHeader:
    """An array as its ``.npy`` header declares it."""

    member: zipfile.ZipInfo
    dtype: np.dtype
    shape: tuple[int, ...]
    data_offset: int  # bytes of magic and header before the values


def check_npz(path: Path, limits: NpzLimits) -> UploadInfo:
    """Validate the ``.npz`` at ``path`` within ``limits``; :class:`InvalidUpload` if refused."""
    with path.open("rb") as handle:
        _check_directory_size(handle)
        try:
            archive = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
            raise InvalidUpload("file", f"not a valid .npz file ({error})") from error
        with archive:
            members = _arrays_of(archive, limits)
            headers = {name: _read_header(archive, name, info) for name, info in members.items()}
            _check_shapes(headers)
            return _check_values(archive, headers, limits)


def _check_directory_size(handle: BinaryIO) -> None:
    """Refuse a central directory over :data:`MAX_DIRECTORY_BYTES` before it is parsed.

    ``zipfile`` reads the end record the same way (its own helper, so both agree on which
    record counts) and then builds an object per directory entry, however many there are.
    """
    try:
        end_record = zipfile._EndRecData(handle)
    except (OSError, zipfile.BadZipFile) as error:
        raise InvalidUpload("file", f"not a valid .npz file ({error})") from error
    if end_record is None:
        raise InvalidUpload("file", "not a valid .npz file (no zip end record)")
    directory_bytes = end_record[zipfile._ECD_SIZE]
    if directory_bytes > MAX_DIRECTORY_BYTES:
        raise InvalidUpload(
            "file",
            f"zip directory of {directory_bytes} bytes; a dataset archive's is under "
            f"{MAX_DIRECTORY_BYTES} (a few arrays)",
        )
    handle.seek(0)


def _arrays_of(archive: zipfile.ZipFile, limits: NpzLimits) -> dict[str, zipfile.ZipInfo]:
    """The members numpy would read as the dataset's arrays, by array name, after checking
    every member's method, declared size and ratio (413 naming the limit past one)."""
    arrays: dict[str, zipfile.ZipInfo] = {}
    seen: set[str] = set()
    total = 0
    for info in archive.infolist():
        # np.load names a member "x.npy" or "x" as array "x"; two members of one name would
        # let the checked one and the loaded one differ.
        name = info.filename.removesuffix(".npy")
        if name in seen:
            raise InvalidUpload("file", f"two members are named {name!r}")
        seen.add(name)
        field = name if name in (*REQUIRED, NUM_CLASSES) else "file"
        if info.flag_bits & ENCRYPTED_FLAG:
            raise InvalidUpload(field, f"member {info.filename!r} is encrypted")
        if info.compress_type not in ACCEPTED_METHODS:
            raise InvalidUpload(
                field, f"member {info.filename!r}: only stored or deflated members are accepted"
            )
        _check_member_size(info, limits)
        total += info.file_size
        if total > limits.max_uncompressed_bytes:
            raise _too_large(f"the members unpack to over {limits.max_uncompressed_bytes} bytes")
        if field != "file":
            arrays[name] = info
    missing = [name for name in REQUIRED if name not in arrays]
    if missing:
        raise InvalidUpload(missing[0], f"missing arrays {missing}; expected {list(REQUIRED)}")
    return arrays


def _check_member_size(info: zipfile.ZipInfo, limits: NpzLimits) -> None:
    """413 when a member declares more than the limit, or packs more than the ratio allows.

    A member under one chunk is exempt from the ratio: it costs one chunk at most however it
    is packed (a scalar ``num_classes`` deflates 130 bytes to 70).
    """
    if info.file_size > limits.max_uncompressed_bytes:
        raise _too_large(
            f"member {info.filename!r} unpacks to {info.file_size} bytes, over "
            f"{limits.max_uncompressed_bytes}"
        )
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > CHUNK_BYTES and ratio > limits.max_compression_ratio:
        raise InvalidUpload(
            "max_upload_compression_ratio",
            f"member {info.filename!r} unpacks {ratio:.0f}× its packed size, over "
            f"{limits.max_compression_ratio:g}×",
            status=413,
        )


def _too_large(message: str) -> InvalidUpload:
    return InvalidUpload("max_upload_uncompressed_bytes", message, status=413)


def _read_header(archive: zipfile.ZipFile, name: str, info: zipfile.ZipInfo) -> ArrayHeader:
    """Dtype and shape from the member's ``.npy`` header (a few hundred bytes unpacked),
    checked against its declared size; object and structured dtypes are refused."""
    try:
        with archive.open(info) as stream:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
            header_bytes = stream.tell()
    except (ValueError, OSError, EOFError, SyntaxError, zipfile.BadZipFile, zlib.error) as error:
        raise InvalidUpload(name, f"not a readable .npy array ({error})") from error
    if dtype.hasobject:
        raise InvalidUpload(
            name,
            f"unreadable without pickle (dtype {dtype}); arrays must be plain numeric "
            "arrays, object arrays are refused",
        )
    if dtype.fields is not None or dtype.subdtype is not None:
        raise InvalidUpload(name, f"must be a plain numeric array, got dtype {dtype}")
    if any(size < 0 for size in shape):
        raise InvalidUpload(name, f"negative dimension in shape {shape}")
    data_bytes = dtype.itemsize * math.prod(shape)
    if header_bytes + data_bytes != info.file_size:
        raise InvalidUpload(
            name,
            f"shape {shape} of {dtype} is {data_bytes} bytes, but the member holds "
            f"{info.file_size - header_bytes}",
        )
    return ArrayHeader(info, dtype, tuple(shape), header_bytes)


def _check_shapes(headers: dict[str, ArrayHeader]) -> None:
    """Dtypes and shapes the engine reads and a job can train on (from headers only)."""
    for split in SPLITS:
        x, y = headers[f"x_{split}"], headers[f"y_{split}"]
        if x.dtype.kind not in "fiu":
            raise InvalidUpload(f"x_{split}", f"must be a numeric array, got dtype {x.dtype}")
        if y.dtype.kind not in "iu":
            raise InvalidUpload(f"y_{split}", f"must hold integer labels, got dtype {y.dtype}")
        if len(x.shape) < 2 or x.shape[0] == 0:
            raise InvalidUpload(f"x_{split}", f"must have shape (N, ...) with N ≥ 1, got {x.shape}")
        if 0 in x.shape[1:]:
            raise InvalidUpload(
                f"x_{split}", f"every feature dimension must be ≥ 1, got shape {x.shape}"
            )
        if y.shape != (x.shape[0],):
            raise InvalidUpload(
                f"y_{split}",
                f"must have shape ({x.shape[0]},) to match x_{split}, got {y.shape}",
            )
    train, test = headers["x_train"].shape[1:], headers["x_test"].shape[1:]
    if train != test:
        raise InvalidUpload(
            "x_train", f"x_train samples have shape {train} but x_test samples {test}"
        )
    classes = headers.get(NUM_CLASSES)
    if classes is not None and (classes.dtype.kind not in "iu" or math.prod(classes.shape) != 1):
        raise InvalidUpload(NUM_CLASSES, "must be one positive integer")


def _check_values(
    archive: zipfile.ZipFile, headers: dict[str, ArrayHeader], limits: NpzLimits
) -> UploadInfo:
    """Stream every array once: finite features, labels in ``[0, classes)``, intact data."""
    label_ranges: dict[str, tuple[int, int]] = {}
    for name, header in headers.items():
        labels = name.startswith("y_") or name == NUM_CLASSES  # never empty (checked)
        low, high = math.inf, -math.inf
        for values in _chunks(archive, name, header):
            if header.dtype.kind == "f" and not np.isfinite(values).all():
                raise InvalidUpload(name, "holds NaN or infinite values")
            if labels:
                low, high = min(low, int(values.min())), max(high, int(values.max()))
        if labels:
            label_ranges[name] = (int(low), int(high))
    num_classes = _num_classes(label_ranges, limits.max_classes)
    for split in SPLITS:
        low, high = label_ranges[f"y_{split}"]
        if low < 0 or high >= num_classes:
            raise InvalidUpload(
                f"y_{split}", f"labels must be in [0, {num_classes}), got [{low}, {high}]"
            )
    return UploadInfo(
        input_shape=list(headers["x_train"].shape[1:]),
        num_classes=num_classes,
        train_size=headers["y_train"].shape[0],
        test_size=headers["y_test"].shape[0],
    )


def _num_classes(label_ranges: dict[str, tuple[int, int]], max_classes: int) -> int:
    """The stored ``num_classes``, else one more than the largest train label; at most
    ``max_classes`` (the output layer's width, bounded like any other width)."""
    if NUM_CLASSES in label_ranges:
        field, num_classes = NUM_CLASSES, label_ranges[NUM_CLASSES][0]
        if num_classes < 1:
            raise InvalidUpload(NUM_CLASSES, "must be one positive integer")
    else:
        field, num_classes = "y_train", label_ranges["y_train"][1] + 1
    if num_classes > max_classes:
        raise InvalidUpload(
            field, f"{num_classes} classes; at most max_classes ({max_classes}) are allowed"
        )
    return num_classes


def _chunks(archive: zipfile.ZipFile, name: str, header: ArrayHeader) -> Iterator[np.ndarray]:
    """The array's values in storage order, at most :data:`CHUNK_BYTES` at a time, then a
    read to the member's end so ``zipfile`` checks its CRC (422 naming the array if bad)."""
    itemsize = header.dtype.itemsize
    chunk_bytes = max(itemsize, CHUNK_BYTES - CHUNK_BYTES % itemsize)
    left = itemsize * math.prod(header.shape)
    try:
        with archive.open(header.member) as stream:
            stream.read(header.data_offset)
            while left > 0:
                data = stream.read(min(chunk_bytes, left))
                if not data:
                    raise EOFError("the data ends before its declared size")
                left -= len(data)
                yield np.frombuffer(data, dtype=header.dtype)
            if stream.read(1):
                raise ValueError("data after the array")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        raise InvalidUpload(name, f"damaged data ({error})") from error
