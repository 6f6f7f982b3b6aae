"""One contract for object storage, run on the local folder and on a real S3-compatible
server (moto's, on a free loopback port)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import moto.server as moto_server
import pytest

from noisefa.service.storage import (
    LocalStorage,
    Storage,
    UnsafeNameError,
    check_writable,
    storage_from_url,
)


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on loopback with a ``noisefa`` bucket."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ).create_bucket(Bucket="noisefa")
    yield endpoint
    server.stop()


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path, monkeypatch) -> Storage:
    if request.param == "local":
        return storage_from_url((tmp_path / "objects").as_uri())
    endpoint = request.getfixturevalue("s3_endpoint")
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        monkeypatch.setenv(name, value)
    return storage_from_url(f"s3://noisefa/{tmp_path.name}", s3_endpoint_url=endpoint)


def test_bytes_and_files_round_trip(storage, tmp_path):
    storage.put_bytes("p/jobs/j/result.json", b'{"ok": true}')
    source = tmp_path / "big.bin"
    source.write_bytes(b"\x01" * (3 << 20))
    storage.put_file("p/jobs/j/checkpoints/e1", source)
    assert storage.exists("p/jobs/j/result.json")
    assert storage.size("p/jobs/j/checkpoints/e1") == 3 << 20
    chunks = list(storage.iter_bytes("p/jobs/j/checkpoints/e1", chunk_size=1 << 20))
    assert len(chunks) >= 3 and b"".join(chunks) == source.read_bytes()
    target = tmp_path / "copy.json"
    storage.get_file("p/jobs/j/result.json", target)
    assert target.read_bytes() == b'{"ok": true}'


def test_list_by_prefix_and_delete(storage):
    for key in ("p/jobs/a/x", "p/jobs/a/y/z", "p/jobs/b/x"):
        storage.put_bytes(key, b"1")
    assert storage.list("p/jobs/a/") == ["p/jobs/a/x", "p/jobs/a/y/z"]
    storage.delete("p/jobs/a/x")
    storage.delete("p/jobs/a/x")  # deleting twice is fine
    assert not storage.exists("p/jobs/a/x")
    assert storage.list("p/") == ["p/jobs/a/y/z", "p/jobs/b/x"]


def test_missing_keys_raise_file_not_found(storage, tmp_path):
    with pytest.raises(FileNotFoundError):
        storage.iter_bytes("nope")
    with pytest.raises(FileNotFoundError):
        storage.size("nope")
    with pytest.raises(FileNotFoundError):
        storage.get_file("nope", tmp_path / "x")
    assert not storage.exists("nope")


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a/../../b", "a\\b", "a//b", "", "./a"])
def test_keys_that_could_escape_the_root_are_refused(storage, key):
    with pytest.raises(UnsafeNameError):
        storage.put_bytes(key, b"x")
    with pytest.raises(UnsafeNameError):
        storage.iter_bytes(key)


def test_storage_is_writable(storage):
    check_writable(storage)
    assert [key for key in storage.list() if key.startswith(".readyz")] == []


def test_local_storage_refuses_a_symlink_out_of_its_root(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    with pytest.raises(UnsafeNameError):
        LocalStorage(root).put_bytes("link/x", b"x")
