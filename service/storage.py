"""Object storage behind one small interface: a local folder or an S3-compatible bucket.

Selected by URL (``file:///abs/path`` or ``s3://bucket/prefix``). Keys are relative,
slash-separated names, checked by :func:`check_name` and always joined under the root, so
no key can reach outside it. Missing keys raise ``FileNotFoundError`` on every backend.

Reads that must be intact go through :mod:`.checksums` (size and sha256 recorded at write).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

from .settings import Settings

CHUNK_SIZE = 1 << 20


class UnsafeNameError(ValueError):
    """A key or artifact name that could escape its folder."""


def check_name(name: str) -> str:
    """Return ``name`` when it is a safe relative key; raise :class:`UnsafeNameError` if not.

    Refused: empty names, absolute paths, backslashes, NUL, and ``.``/``..``/empty segments.
    """
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        raise UnsafeNameError(f"unsafe name {name!r}")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise UnsafeNameError(f"unsafe name {name!r}")
    return name


def _check_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a safe name optionally ending in ``/``."""
    if prefix:
        check_name(prefix[:-1] if prefix.endswith("/") else prefix)
    return prefix


class Storage(Protocol):
    """What the service and the worker need from object storage."""

    url: str

    def put_file(self, key: str, path: Path) -> None:
        """Upload a local file to ``key`` (replacing it)."""

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` at ``key`` (replacing it)."""

    def iter_bytes(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Stream the object in chunks."""

    def get_file(self, key: str, path: Path) -> None:
        """Download the object to a local file."""

    def exists(self, key: str) -> bool:
        """Whether the object exists."""

    def size(self, key: str) -> int:
        """Size of the object in bytes."""

    def list(self, prefix: str = "") -> list[str]:
        """Keys starting with ``prefix``, sorted."""

    def delete(self, key: str) -> None:
        """Remove the object (no error when missing)."""


class LocalStorage:
    """Objects as files under a root folder (the embedded default)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.url = self.root.as_uri()

    def _path(self, key: str) -> Path:
        path = (self.root / check_name(key)).resolve()
        if not path.is_relative_to(self.root):  # a symlink pointing outside
            raise UnsafeNameError(f"unsafe name {key!r}")
        return path

    def put_file(self, key: str, path: Path) -> None:
        """Copy to a temporary file beside the target, then rename: readers never see halves."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write to a temporary file beside the target, then rename."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def iter_bytes(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Open now (so a missing key fails before streaming starts), read lazily."""
        handle = self._path(key).open("rb")
        return read_chunks(handle, chunk_size)

    def get_file(self, key: str, path: Path) -> None:
        """Copy the object to ``path``."""
        shutil.copyfile(self._path(key), path)

    def exists(self, key: str) -> bool:
        """Whether a file exists at ``key``."""
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        """File size in bytes."""
        return self._path(key).stat().st_size

    def list(self, prefix: str = "") -> list[str]:
        """Every file whose key starts with ``prefix`` (temporary files excluded)."""
        _check_prefix(prefix)
        # Walk only the deepest folder the prefix names, not the whole store.
        folder = self._path(prefix.rsplit("/", 1)[0]) if "/" in prefix else self.root
        if not folder.is_dir():
            return []
        keys = (
            path.relative_to(self.root).as_posix()
            for path in folder.rglob("*")
            if path.is_file() and not path.name.startswith(".tmp-")
        )
        return sorted(key for key in keys if key.startswith(prefix))

    def delete(self, key: str) -> None:
        """Remove the file if present."""
        self._path(key).unlink(missing_ok=True)


def read_chunks(handle, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Read an open file in chunks, closing it at the end."""
    with handle:
        while chunk := handle.read(chunk_size):
            yield chunk


class S3Storage:
    """Objects in an S3-compatible bucket under a key prefix (MinIO in docker-compose)."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3}),
        )

    def _key(self, key: str) -> str:
        return self.prefix + check_name(key)

    def _missing(self, error: Exception) -> bool:
        code = getattr(error, "response", {}).get("Error", {}).get("Code")
        return code in ("404", "NoSuchKey", "NotFound")

    def put_file(self, key: str, path: Path) -> None:
        """Upload (multipart for large files)."""
        self.client.upload_file(str(path), self.bucket, self._key(key))

    def put_bytes(self, key: str, data: bytes) -> None:
        """One PUT."""
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def iter_bytes(self, key: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """GET now (a missing key fails before streaming), then stream the body."""
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except ClientError as error:
            if self._missing(error):
                raise FileNotFoundError(key) from error
            raise
        return _stream_body(body, chunk_size)

    def get_file(self, key: str, path: Path) -> None:
        """Download to ``path``."""
        from botocore.exceptions import ClientError

        try:
            self.client.download_file(self.bucket, self._key(key), str(path))
        except ClientError as error:
            if self._missing(error):
                raise FileNotFoundError(key) from error
            raise

    def _head(self, key: str) -> dict:
        from botocore.exceptions import ClientError

        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as error:
            if self._missing(error):
                raise FileNotFoundError(key) from error
            raise

    def exists(self, key: str) -> bool:
        """HEAD the object."""
        try:
            self._head(key)
        except FileNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        """ContentLength from a HEAD."""
        return int(self._head(key)["ContentLength"])

    def list(self, prefix: str = "") -> list[str]:
        """Paginated listing, keys relative to the storage prefix."""
        full = self.prefix + _check_prefix(prefix)
        keys = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=full
        ):
            keys.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
        return sorted(keys)

    def delete(self, key: str) -> None:
        """DELETE (S3 answers success when missing)."""
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))


def _stream_body(body, chunk_size: int) -> Iterator[bytes]:
    try:
        yield from body.iter_chunks(chunk_size)
    finally:
        body.close()


def storage_from_url(url: str, s3_endpoint_url: str | None = None) -> Storage:
    """The backend for ``file:///abs/path`` or ``s3://bucket/prefix``."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalStorage(Path(unquote(parsed.path)))
    if parsed.scheme == "s3":
        return S3Storage(parsed.netloc, parsed.path, endpoint_url=s3_endpoint_url)
    raise ValueError(f"storage URL must start with file:// or s3://, got {url!r}")


def storage_from_settings(settings: Settings) -> Storage:
    """The storage the settings name (a folder under home by default)."""
    return storage_from_url(settings.resolved_storage_url, settings.s3_endpoint_url)


def check_writable(storage: Storage) -> None:
    """Write, read back and delete a probe object; raises when storage is not usable."""
    key = f".readyz/{uuid.uuid4().hex}"
    storage.put_bytes(key, b"ok")
    try:
        if b"".join(storage.iter_bytes(key)) != b"ok":
            raise OSError("storage returned other bytes than written")
    finally:
        storage.delete(key)
