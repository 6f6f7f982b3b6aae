"""Verified reads of objects: an intact one comes back as written; a short, long or garbled
one raises ``CorruptObjectError`` and leaves no file behind, partial or temporary."""

from __future__ import annotations

import hashlib

import pytest

from noisefa.service.checksums import (
    CorruptObjectError,
    Digest,
    file_digest,
    get_verified_file,
    verified_chunks,
)
from noisefa.service.storage import LocalStorage

DATA = bytes(range(256)) * 8192  # 2 MiB: several chunks
RECORDED = Digest(size=len(DATA), sha256=hashlib.sha256(DATA).hexdigest())


@pytest.fixture
def storage(tmp_path) -> LocalStorage:
    storage = LocalStorage(tmp_path / "objects")
    storage.put_bytes("p/jobs/j/a.bin", DATA)
    return storage


def test_a_files_digest_is_its_size_and_sha256(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(DATA)
    assert file_digest(path) == RECORDED


def test_an_intact_object_downloads_and_streams_as_written(storage, tmp_path):
    target = tmp_path / "down" / "a.bin"
    get_verified_file(storage, "p/jobs/j/a.bin", target, RECORDED)
    assert target.read_bytes() == DATA
    assert b"".join(verified_chunks(storage, "p/jobs/j/a.bin", RECORDED)) == DATA


@pytest.mark.parametrize(
    ("stored", "recorded", "says"),
    [
        (DATA[:-1], RECORDED, "of the"),
        (DATA + b"x", RECORDED, "longer"),
        (DATA[:-1] + b"\x00", RECORDED, "sha256"),
        (DATA[:-1], Digest(size=len(DATA), sha256=None), "of the"),  # a row without checksum
    ],
    ids=["short", "long", "garbled", "short-without-checksum"],
)
def test_a_damaged_object_is_refused_leaving_no_file(storage, tmp_path, stored, recorded, says):
    storage.put_bytes("p/jobs/j/a.bin", stored)
    target = tmp_path / "down" / "a.bin"
    with pytest.raises(CorruptObjectError, match=says):
        get_verified_file(storage, "p/jobs/j/a.bin", target, recorded)
    assert list(target.parent.iterdir()) == []
    with pytest.raises(CorruptObjectError, match=says):
        verified_chunks(storage, "p/jobs/j/a.bin", recorded)


def test_a_missing_object_is_not_found(storage, tmp_path):
    with pytest.raises(FileNotFoundError):
        verified_chunks(storage, "p/jobs/j/missing.bin", RECORDED)
    with pytest.raises(FileNotFoundError):
        get_verified_file(storage, "p/jobs/j/missing.bin", tmp_path / "x", RECORDED)
