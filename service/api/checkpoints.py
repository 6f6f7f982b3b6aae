"""``/v1/checkpoints``: the project's uploaded safetensors checkpoints.

A checkpoint trained anywhere (``noisefa run``, another deployment) is uploaded here and then
named ``checkpoint:<id>`` in a train job's ``init_from`` (start from its weights and
feedback matrices) or an evaluate job's. The file is read to a temporary folder, counting
bytes against ``max_checkpoint_bytes``, validated without pickle and without torch
(:mod:`noisefa.service.checkpoint_check`), and only then stored (:mod:`.upload_flow`).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response

from .. import deletion, storage_quota
from ..checkpoint_check import CheckpointInfo
from ..idempotency import CHECKPOINT_KEYS
from ..models import CheckpointUpload
from ..npz_check import InvalidUpload
from ..problems import ProblemError
from ..repositories import checkpoints as checkpoint_repo
from ..schemas import CheckpointList, CheckpointOut
from ..settings import Settings
from .deps import CurrentProject, InFlightKeysDep, SessionDep, SettingsDep, StorageDep
from .responses import AUTH_PROBLEMS, problem
from .routing import SessionReleasingRoute
from .upload_flow import UploadKeyHeader, UploadKind, receive_upload, refused, upload_body

router = APIRouter(
    prefix="/v1/checkpoints", tags=["checkpoints"], route_class=SessionReleasingRoute
)

UPLOAD_BODY = upload_body(
    "A noisefa checkpoint (`.safetensors`, as `noisefa run` "
    "and jobs write them): model tensors matching its metadata's "
    "`model_config`, finite values, and the `noisefa` metadata JSON "
    "(format version, spec, model config, progress)."
)
"""The documented body of ``POST /v1/checkpoints`` (the route parses it itself)."""


def _not_found(checkpoint_id: str) -> ProblemError:
    return ProblemError(404, f"checkpoint {checkpoint_id!r} not found", slug="not-found")


@router.post(
    "",
    status_code=201,
    summary="Upload a checkpoint (.safetensors)",
    response_description="Stored; use its `name` (`checkpoint:<id>`) as a job's `init_from`.",
    responses={
        **AUTH_PROBLEMS,
        400: problem("The body is not a readable multipart form."),
        409: problem("A request with the same `Idempotency-Key` is still in flight."),
        413: problem(
            "File over `max_checkpoint_bytes`, a header over `max_checkpoint_header_bytes`, "
            "or a project that would store more than `max_project_bytes`; `errors` names the "
            "limit."
        ),
        422: problem(
            "Not a checkpoint a job can start from (not safetensors, truncated, no `noisefa` "
            "metadata, tensors whose names, shapes or dtypes do not match its `model_config`, "
            "NaN or infinite values, a checksum mismatch, a model over the deployment's "
            "widths, depth or classes); `errors` names the metadata field or tensor."
        ),
    },
    openapi_extra={"requestBody": UPLOAD_BODY},
)
async def upload_checkpoint(
    request: Request,
    response: Response,
    session: SessionDep,
    project: CurrentProject,
    settings: SettingsDep,
    storage: StorageDep,
    in_flight: InFlightKeysDep,
    idempotency_key: UploadKeyHeader = None,
) -> CheckpointOut:
    """Validate the checkpoint, store it under the project, and describe it."""

    def store(path: Path, filename: str, idempotency: tuple[str, str] | None) -> CheckpointUpload:
        storage_quota.check_room_for_upload(session, project.id, settings, path.stat().st_size)
        info = _validated(path, settings)
        return checkpoint_repo.create_upload(
            session, storage, project.id, filename, path, info, idempotency
        )

    kind = UploadKind(
        file="a .safetensors checkpoint",
        default_name="checkpoint.safetensors",
        max_bytes=settings.max_checkpoint_bytes,
        limit_field="max_checkpoint_bytes",
    )
    row = await receive_upload(
        request,
        session,
        in_flight,
        CHECKPOINT_KEYS,
        project.id,
        idempotency_key,
        settings.idempotency_ttl_s,
        kind,
        store,
    )
    response.headers["Location"] = f"/v1/checkpoints/{row.id}"
    return CheckpointOut.of(row)


def _validated(path: Path, settings: Settings) -> CheckpointInfo:
    try:
        return checkpoint_repo.validate_checkpoint(path, settings)
    except InvalidUpload as error:
        raise refused(error) from error


@router.get("", summary="List uploaded checkpoints", responses=AUTH_PROBLEMS)
def list_checkpoints(
    session: SessionDep, project: CurrentProject, settings: SettingsDep
) -> CheckpointList:
    """The project's uploaded checkpoints, newest first (at most `max_page_size`)."""
    rows = checkpoint_repo.list_uploads(session, project.id, settings.max_page_size)
    return CheckpointList(items=[CheckpointOut.of(row) for row in rows])


@router.get(
    "/{checkpoint_id}",
    summary="Get an uploaded checkpoint",
    responses={**AUTH_PROBLEMS, 404: problem("No such checkpoint in the caller's project.")},
)
def get_checkpoint(
    checkpoint_id: str, session: SessionDep, project: CurrentProject
) -> CheckpointOut:
    """The model config, training set and size of one of the project's checkpoints."""
    row = checkpoint_repo.get_upload(session, project.id, checkpoint_id)
    if row is None:
        raise _not_found(checkpoint_id)
    return CheckpointOut.of(row)


@router.delete(
    "/{checkpoint_id}",
    status_code=204,
    summary="Delete an uploaded checkpoint",
    responses={
        **AUTH_PROBLEMS,
        404: problem("No such checkpoint in the caller's project."),
        409: problem("An unfinished job starts from it; `detail` says how many."),
    },
)
def delete_checkpoint(
    checkpoint_id: str, session: SessionDep, project: CurrentProject, storage: StorageDep
) -> Response:
    """Delete the checkpoint's row and stored file (jobs that used it keep their results)."""
    row = checkpoint_repo.get_upload(session, project.id, checkpoint_id)
    if row is None:
        raise _not_found(checkpoint_id)
    deletion.delete_checkpoint(session, storage, row)
    return Response(status_code=204)
