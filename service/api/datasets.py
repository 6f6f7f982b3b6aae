"""``/v1/datasets``: the built-in catalogue and the project's ``.npz`` uploads.

An upload is read to a temporary file (counting bytes against ``max_upload_bytes``),
validated by the engine without pickle, and only then stored: a refused upload leaves no row
and no object. The route reads the multipart body itself, after authenticating and after
taking its ``Idempotency-Key`` (:mod:`noisefa.service.idempotency`), so a duplicate sent
while a large file is still arriving is a 409, not a second upload.
"""

from __future__ import annotations

import hashlib
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from .. import deletion, storage_quota
from ..guards import unstorable
from ..idempotency import UPLOAD_KEYS
from ..models import Dataset
from ..npz_check import InvalidUpload, UploadInfo
from ..problems import FieldError, ProblemError
from ..repositories import datasets as dataset_repo
from ..schemas import BuiltinDatasetOut, DatasetList, UploadOut
from ..settings import Settings
from .deps import CurrentProject, InFlightKeysDep, SessionDep, SettingsDep, StorageDep
from .responses import AUTH_PROBLEMS, problem
from .routing import SessionReleasingRoute

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], route_class=SessionReleasingRoute)

CHUNK = 1 << 20

UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {
                        "type": "string",
                        "contentMediaType": "application/octet-stream",
                        "description": "A `.npz` (no pickled objects) with numeric `x_train` "
                        "(N, ...), integer `y_train` (N,), `x_test` (M, ...), `y_test` (M,) "
                        "and optionally `num_classes`; labels in [0, classes).",
                    }
                },
            }
        }
    },
}
"""The documented body of ``POST /v1/datasets`` (the route parses it itself)."""


def _invalid(field: str, message: str, status: int = 422, slug: str = "invalid-upload"):
    return ProblemError(
        status,
        f"{field}: {message}",
        slug=slug,
        title="Invalid upload" if status == 422 else None,
        errors=[FieldError(field=field, message=message)],
    )


def _not_found(dataset_id: str) -> ProblemError:
    return ProblemError(404, f"dataset {dataset_id!r} not found", slug="not-found")


@router.post(
    "",
    status_code=201,
    summary="Upload a dataset (.npz)",
    response_description="Stored; use its `name` (`upload:<id>`) as a job's dataset.",
    responses={
        **AUTH_PROBLEMS,
        400: problem("The body is not a readable multipart form."),
        409: problem("A request with the same `Idempotency-Key` is still in flight."),
        413: problem(
            "File over `max_upload_bytes`, arrays that unpack past "
            "`max_upload_uncompressed_bytes` or `max_upload_compression_ratio`, or a project "
            "that would store more than `max_project_bytes`; `errors` names the limit."
        ),
        422: problem(
            "Not a dataset a job can train on (pickled objects, shapes, NaN, labels outside "
            "`[0, num_classes)`, over `max_classes` classes, an empty split or feature "
            "dimension); `errors` names the array."
        ),
    },
    openapi_extra={"requestBody": UPLOAD_BODY},
)
async def upload_dataset(
    request: Request,
    response: Response,
    session: SessionDep,
    project: CurrentProject,
    settings: SettingsDep,
    storage: StorageDep,
    in_flight: InFlightKeysDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=255,
            description="Same key and file → the first upload again; same key, other file → "
            "422; same key while its first request is still in flight → 409.",
        ),
    ] = None,
) -> UploadOut:
    """Validate the file, store it under the project, and describe it."""
    held = (
        UPLOAD_KEYS.hold(session, in_flight, project.id, idempotency_key)
        if idempotency_key
        else nullcontext()
    )
    with held, tempfile.TemporaryDirectory(prefix="noisefa-upload-") as folder:
        path = Path(folder) / "upload.npz"
        async with request.form(max_files=1) as form:
            filename, request_hash = await _spool(_file_of(form), path, settings.max_upload_bytes)
        idempotency = (idempotency_key, request_hash) if idempotency_key else None

        def store() -> Dataset:
            storage_quota.check_room_for_upload(session, project.id, settings, path.stat().st_size)
            info = _validated(path, settings)
            return dataset_repo.create_upload(
                session, storage, project.id, filename, path, info, idempotency
            )

        if idempotency_key:
            dataset, _ = await run_in_threadpool(
                UPLOAD_KEYS.replay_or_create,
                session,
                project.id,
                idempotency_key,
                request_hash,
                settings.idempotency_ttl_s,
                store,
            )
        else:
            dataset = await run_in_threadpool(store)
    response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    return UploadOut.of(dataset)


def _file_of(form: FormData) -> UploadFile:
    """The form's ``file`` part (422 naming it when absent, not a file, or named with text
    no column can store)."""
    file = form.get("file")
    if not isinstance(file, UploadFile):
        raise _invalid("file", "required: a .npz file as the multipart part `file`")
    reason = unstorable(file.filename or "")
    if reason:
        raise _invalid("file.filename", reason)
    return file


async def _spool(file: UploadFile, path: Path, max_bytes: int) -> tuple[str, str]:
    """Copy ``file`` to ``path`` (413 past ``max_bytes``); its name and the request hash."""
    filename = (file.filename or "dataset.npz")[:255]
    digest = hashlib.sha256(filename.encode() + b"\0")
    size = 0
    with path.open("wb") as out:
        while chunk := await file.read(CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise _invalid(
                    "max_upload_bytes",
                    f"file is over {max_bytes} bytes",
                    status=413,
                    slug="upload-too-large",
                )
            digest.update(chunk)
            out.write(chunk)
    return filename, digest.hexdigest()


def _validated(path: Path, settings: Settings) -> UploadInfo:
    """What validation learnt of the file; 413 naming the size limit it broke, 422 naming
    the array it refused."""
    try:
        return dataset_repo.validate_npz(path, settings)
    except InvalidUpload as error:
        slug = "upload-too-large" if error.status == 413 else "invalid-upload"
        raise _invalid(error.field, error.message, status=error.status, slug=slug) from error


@router.get("", summary="List datasets", responses=AUTH_PROBLEMS)
def list_datasets(
    session: SessionDep, project: CurrentProject, settings: SettingsDep
) -> DatasetList:
    """The engine's built-in datasets (with availability) and the project's uploads."""
    builtins = [BuiltinDatasetOut(**d) for d in dataset_repo.builtin_datasets(settings.data_dir)]
    uploads = dataset_repo.list_uploads(session, project.id, settings.max_page_size)
    return DatasetList(items=[*builtins, *(UploadOut.of(row) for row in uploads)])


@router.get(
    "/{dataset_id}",
    summary="Get an uploaded dataset",
    responses={
        **AUTH_PROBLEMS,
        404: problem("No such upload in the caller's project."),
        422: problem("Invalid parameter; `errors` names it."),
    },
)
def get_dataset(dataset_id: str, session: SessionDep, project: CurrentProject) -> UploadOut:
    """Shape, classes and sizes of one of the project's uploads."""
    dataset = dataset_repo.get_upload(session, project.id, dataset_id)
    if dataset is None:
        raise _not_found(dataset_id)
    return UploadOut.of(dataset)


@router.delete(
    "/{dataset_id}",
    status_code=204,
    summary="Delete an uploaded dataset",
    responses={
        **AUTH_PROBLEMS,
        404: problem("No such upload in the caller's project."),
        409: problem("An unfinished job reads the upload; `detail` says how many."),
    },
)
def delete_dataset(
    dataset_id: str, session: SessionDep, project: CurrentProject, storage: StorageDep
) -> Response:
    """Delete the upload's row and stored file (jobs that used it keep their results)."""
    dataset = dataset_repo.get_upload(session, project.id, dataset_id)
    if dataset is None:
        raise _not_found(dataset_id)
    deletion.delete_upload(session, storage, dataset)
    return Response(status_code=204)
