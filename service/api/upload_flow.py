"""One way to take a file upload (``POST /v1/datasets``, ``POST /v1/checkpoints``).

The route authenticates and takes its ``Idempotency-Key`` first (:mod:`..idempotency`), so a
duplicate sent while a large file is still arriving is a 409, not a second upload. What
bounds the bytes taken in is the body-limit middleware (:mod:`..guards`): it answers 413 as
soon as the request body passes the route's limit plus the multipart framing
(``UPLOAD_FRAMING_BYTES`` in :mod:`..app`), while Starlette's form parser is still spooling
the part. Once the form is parsed, the part is copied to a temporary folder and its own
size checked against the limit (413 for a file just over it that the framing allowance let
through), hashed with its name for the key, validated (nothing is parsed before this size
check) and only then stored by the route's ``store``: a refused upload leaves no row and no
object.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, TypeVar

from fastapi import Header, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session
from starlette.datastructures import FormData, UploadFile

from ..guards import unstorable
from ..idempotency import InFlightKeys, KeyTable
from ..npz_check import InvalidUpload
from ..problems import FieldError, ProblemError

CHUNK = 1 << 20


def upload_body(file_description: str) -> dict:
    """The OpenAPI ``requestBody`` of an upload route: a multipart form with one ``file``
    part (the routes parse the form themselves, so it is documented here)."""
    part = {
        "type": "string",
        "contentMediaType": "application/octet-stream",
        "description": file_description,
    }
    schema = {"type": "object", "required": ["file"], "properties": {"file": part}}
    return {"required": True, "content": {"multipart/form-data": {"schema": schema}}}


# The upload routes' Idempotency-Key header: one meaning for datasets and checkpoints.
UploadKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="Same key and file → the first upload again; same key, other file → "
        "422; same key while its first request is still in flight → 409.",
    ),
]
Resource = TypeVar("Resource")
Store = Callable[[Path, str, tuple[str, str] | None], Resource]
"""``store(path, filename, (key, request hash) or None)``: validate, store, commit."""


@dataclass(frozen=True)
class UploadKind:
    """What one upload route takes: ``file`` is what the part must hold (for messages),
    ``max_bytes`` and ``limit_field`` its size limit and the setting's name."""

    file: str
    default_name: str
    max_bytes: int
    limit_field: str


def invalid(field: str, message: str, status: int = 422, slug: str = "invalid-upload"):
    """The problem of a refused upload, naming ``field``."""
    return ProblemError(
        status,
        f"{field}: {message}",
        slug=slug,
        title="Invalid upload" if status == 422 else None,
        errors=[FieldError(field=field, message=message)],
    )


def refused(error: InvalidUpload) -> ProblemError:
    """A validator's refusal as its problem: 413 for a size limit, else 422."""
    slug = "upload-too-large" if error.status == 413 else "invalid-upload"
    return invalid(error.field, error.message, status=error.status, slug=slug)


async def receive_upload(
    request: Request,
    session: Session,
    in_flight: InFlightKeys,
    keys: KeyTable,
    project_id: str,
    idempotency_key: str | None,
    ttl_s: float,
    kind: UploadKind,
    store: Store[Resource],
) -> Resource:
    """Hold the key, spool the form's ``file`` part, then ``store`` it (or, for a key
    already used with the same file, answer its first resource)."""
    held = (
        keys.hold(session, in_flight, project_id, idempotency_key)
        if idempotency_key
        else nullcontext()
    )
    with held, tempfile.TemporaryDirectory(prefix="noisefa-upload-") as folder:
        path = Path(folder) / "upload"
        async with request.form(max_files=1) as form:
            filename, request_hash = await _spool(_file_of(form, kind), path, kind)
        if not idempotency_key:
            return await run_in_threadpool(store, path, filename, None)
        resource, _ = await run_in_threadpool(
            keys.replay_or_create,
            session,
            project_id,
            idempotency_key,
            request_hash,
            ttl_s,
            lambda: store(path, filename, (idempotency_key, request_hash)),
        )
        return resource


def _file_of(form: FormData, kind: UploadKind) -> UploadFile:
    """The form's ``file`` part (422 naming it when absent, not a file, or named with text
    no column can store)."""
    file = form.get("file")
    if not isinstance(file, UploadFile):
        raise invalid("file", f"required: {kind.file} as the multipart part `file`")
    reason = unstorable(file.filename or "")
    if reason:
        raise invalid("file.filename", reason)
    return file


async def _spool(file: UploadFile, path: Path, kind: UploadKind) -> tuple[str, str]:
    """Copy ``file`` to ``path`` (413 past the kind's limit); its name and the request hash."""
    filename = (file.filename or kind.default_name)[:255]
    digest = hashlib.sha256(filename.encode() + b"\0")
    size = 0
    with path.open("wb") as out:
        while chunk := await file.read(CHUNK):
            size += len(chunk)
            if size > kind.max_bytes:
                raise invalid(
                    kind.limit_field,
                    f"file is over {kind.max_bytes} bytes",
                    status=413,
                    slug="upload-too-large",
                )
            digest.update(chunk)
            out.write(chunk)
    return filename, digest.hexdigest()
