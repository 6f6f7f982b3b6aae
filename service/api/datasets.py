"""``/v1/datasets``: the built-in catalogue and the project's ``.npz`` uploads.

An upload is read to a temporary file (counting bytes against ``max_upload_bytes``),
validated by the engine without pickle, and only then stored: a refused upload leaves no row
and no object.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Header, Response, UploadFile
from fastapi.concurrency import run_in_threadpool

from ..problems import FieldError, Problem, ProblemError
from ..repositories import datasets as dataset_repo
from ..schemas import BuiltinDatasetOut, DatasetList, UploadOut
from .deps import CurrentProject, SessionDep, SettingsDep, StorageDep

router = APIRouter(prefix="/v1/datasets", tags=["datasets"])

CHUNK = 1 << 20


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


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
        401: _problem("Missing or invalid API key."),
        413: _problem("File over `max_upload_bytes`."),
        422: _problem("Not a valid dataset; `errors` names the array or field."),
    },
)
async def upload_dataset(
    file: Annotated[
        UploadFile,
        File(
            description="A `.npz` (no pickled objects) with numeric `x_train` (N, ...), "
            "integer `y_train` (N,), `x_test` (M, ...), `y_test` (M,) and optionally "
            "`num_classes`; labels in [0, classes)."
        ),
    ],
    response: Response,
    session: SessionDep,
    project: CurrentProject,
    settings: SettingsDep,
    storage: StorageDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            max_length=255,
            description="Same key and file → the first upload again; same key, other file → 422.",
        ),
    ] = None,
) -> UploadOut:
    """Validate the file, store it under the project, and describe it."""
    filename = (file.filename or "dataset.npz")[:255]
    with tempfile.TemporaryDirectory(prefix="noisefa-upload-") as folder:
        path = Path(folder) / "upload.npz"
        digest = hashlib.sha256(filename.encode() + b"\0")
        size = 0
        with path.open("wb") as out:
            while chunk := await file.read(CHUNK):
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    raise _invalid(
                        "max_upload_bytes",
                        f"file is over {settings.max_upload_bytes} bytes",
                        status=413,
                        slug="upload-too-large",
                    )
                digest.update(chunk)
                out.write(chunk)
        request_hash = digest.hexdigest()
        if idempotency_key:
            record = dataset_repo.find_idempotent(
                session, project.id, idempotency_key, settings.idempotency_ttl_s
            )
            if record is not None:
                if record.request_hash != request_hash:
                    raise _invalid(
                        "Idempotency-Key", "already used with another file; use a new key"
                    )
                first = dataset_repo.get_upload(session, project.id, record.dataset_id)
                if first is not None:
                    response.headers["Location"] = f"/v1/datasets/{first.id}"
                    return UploadOut.of(first)
        try:
            info = await run_in_threadpool(dataset_repo.validate_npz, path)
        except dataset_repo.InvalidUpload as error:
            raise _invalid(error.field, error.message) from error
        idempotency = (idempotency_key, request_hash) if idempotency_key else None
        dataset = await run_in_threadpool(
            dataset_repo.create_upload,
            session,
            storage,
            project.id,
            filename,
            path,
            info,
            idempotency,
        )
    response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    return UploadOut.of(dataset)


@router.get("", summary="List datasets", responses={401: _problem("Missing or invalid API key.")})
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
        401: _problem("Missing or invalid API key."),
        404: _problem("No such upload in the caller's project."),
    },
)
def get_dataset(dataset_id: str, session: SessionDep, project: CurrentProject) -> UploadOut:
    """Shape, classes and sizes of one of the project's uploads."""
    dataset = dataset_repo.get_upload(session, project.id, dataset_id)
    if dataset is None:
        raise _not_found(dataset_id)
    return UploadOut.of(dataset)
