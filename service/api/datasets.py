"""``/v1/datasets``: the built-in catalogue and the project's ``.npz`` uploads.

An upload is read to a temporary file (counting bytes against ``max_upload_bytes``),
validated without pickle (:mod:`noisefa.service.npz_check`), and only then stored: a refused
upload leaves no row and no object. The route reads the multipart body itself, after
authenticating and taking its ``Idempotency-Key`` (:mod:`.upload_flow`).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response

from .. import deletion, storage_quota
from ..idempotency import UPLOAD_KEYS
from ..models import Dataset
from ..npz_check import InvalidUpload, UploadInfo
from ..problems import ProblemError
from ..repositories import datasets as dataset_repo
from ..schemas import BuiltinDatasetOut, DatasetList, UploadOut
from ..settings import Settings
from .deps import CurrentProject, InFlightKeysDep, SessionDep, SettingsDep, StorageDep
from .responses import AUTH_PROBLEMS, problem
from .routing import SessionReleasingRoute
from .upload_flow import UploadKeyHeader, UploadKind, receive_upload, refused, upload_body

router = APIRouter(prefix="/v1/datasets", tags=["datasets"], route_class=SessionReleasingRoute)

UPLOAD_BODY = upload_body(
    "A `.npz` (no pickled objects) with numeric `x_train` "
    "(N, ...), integer `y_train` (N,), `x_test` (M, ...), `y_test` (M,) "
    "and optionally `num_classes`; labels in [0, classes)."
)
"""The documented body of ``POST /v1/datasets`` (the route parses it itself)."""


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
    idempotency_key: UploadKeyHeader = None,
) -> UploadOut:
    """Validate the file, store it under the project, and describe it."""

    def store(path: Path, filename: str, idempotency: tuple[str, str] | None) -> Dataset:
        storage_quota.check_room_for_upload(session, project.id, settings, path.stat().st_size)
        info = _validated(path, settings)
        return dataset_repo.create_upload(
            session, storage, project.id, filename, path, info, idempotency
        )

    kind = UploadKind(
        file="a .npz file",
        default_name="dataset.npz",
        max_bytes=settings.max_upload_bytes,
        limit_field="max_upload_bytes",
    )
    dataset = await receive_upload(
        request,
        session,
        in_flight,
        UPLOAD_KEYS,
        project.id,
        idempotency_key,
        settings.idempotency_ttl_s,
        kind,
        store,
    )
    response.headers["Location"] = f"/v1/datasets/{dataset.id}"
    return UploadOut.of(dataset)


def _validated(path: Path, settings: Settings) -> UploadInfo:
    """What validation learnt of the file; 413 naming the size limit it broke, 422 naming
    the array it refused."""
    try:
        return dataset_repo.validate_npz(path, settings)
    except InvalidUpload as error:
        raise refused(error) from error


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
