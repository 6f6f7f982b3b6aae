"""``/v1/jobs``: submit, read, list, cancel; metrics, events (SSE) and artifacts of a job.

Routes only: they parse the request, call one service or repository function and shape the
answer. What a submission must pass lives in :mod:`noisefa.service.submission`.
"""

from __future__ import annotations

import logging
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session

from noisefa.engine.contract.states import JobKind, JobState

from .. import cancellation, deletion, submission
from ..checksums import CorruptObjectError
from ..job_body import SubmittedJob
from ..problems import ProblemError
from ..repositories import artifacts as artifact_repo
from ..repositories import jobs as job_repo
from ..repositories import metrics as metric_repo
from ..resource_check import ESTIMATES_RULE
from ..schemas import ArtifactList, ArtifactOut, JobOut, JobPage, MetricPage, MetricPoint
from ..sse import event_stream_response
from ..storage import UnsafeNameError, check_name
from .deps import (
    CeleryDep,
    Credentials,
    CurrentProject,
    InFlightKeysDep,
    ProjectJob,
    SessionDep,
    SettingsDep,
    StorageDep,
    get_current_project,
    get_project_job,
)
from .params import BIGINT_MAX, INTEGER_MAX, UtcConvertibleDatetime
from .responses import AUTH_PROBLEMS, check_page_size, issued_page_token, problem
from .routing import SessionReleasingRoute

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=SessionReleasingRoute)


JOB_PROBLEMS = {
    **AUTH_PROBLEMS,
    404: problem("No such job in the caller's project."),
    422: problem("Invalid parameter; `errors` names it."),
}
LIST_PROBLEMS = {**AUTH_PROBLEMS, 422: problem("Invalid filter, page size or page token.")}

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="Same key and spec (after normalisation) → the first job again; "
        "same key, other spec → 422; same key while its first request is still in flight "
        "→ 409. Keys expire after `idempotency_ttl_s`.",
    ),
]


@router.post(
    "",
    status_code=202,
    summary="Submit a job",
    response_description="The job was stored and queued; `Location` names it.",
    responses={
        **AUTH_PROBLEMS,
        404: problem(
            "`init_from` names no job of this project, or a dataset `upload:<id>` names no "
            "upload of it; `errors` names the field."
        ),
        409: problem(
            "`init_from` names a job that has not succeeded, or a request with the same "
            "`Idempotency-Key` is still in flight."
        ),
        413: problem("Request body over the size limit."),
        415: problem("The body is not sent as `application/json`."),
        422: problem(
            "Invalid spec or limit exceeded; `errors` names the fields. " + ESTIMATES_RULE
        ),
        429: problem(
            "Too many unfinished jobs in this project (`max_concurrent_jobs`), or it already "
            "stores `max_project_bytes`."
        ),
    },
)
def submit_job(
    spec: Annotated[SubmittedJob, Body()],
    response: Response,
    session: SessionDep,
    project: CurrentProject,
    settings: SettingsDep,
    celery: CeleryDep,
    in_flight: InFlightKeysDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JobOut:
    """Validate the spec against the deployment's limits, store the job, then enqueue it.

    `kind` picks the body: `pretrain` / `train` (a `JobSpec`), `evaluate` (an
    `EvaluateSpec`: a succeeded job's checkpoint under shifts) or `experiment` (an
    `ExperimentSpec`: conditions × seeds, run as child jobs listed with `?parent_id=`)."""
    job = submission.submit_job(
        session, project, spec, settings, celery, in_flight, idempotency_key
    )
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobOut.of(job)


@router.get("", summary="List jobs", responses=LIST_PROBLEMS)
def list_jobs(
    session: SessionDep,
    project: CurrentProject,
    settings: SettingsDep,
    state: Annotated[JobState | None, Query(description="Only jobs in this state.")] = None,
    kind: Annotated[JobKind | None, Query(description="Only jobs of this kind.")] = None,
    parent_id: Annotated[
        str | None, Query(max_length=64, description="Only the runs of this experiment.")
    ] = None,
    created_after: Annotated[
        UtcConvertibleDatetime | None, Query(description="Created at or after.")
    ] = None,
    created_before: Annotated[
        UtcConvertibleDatetime | None, Query(description="Created before.")
    ] = None,
    page_size: Annotated[int, Query(ge=1, description="Jobs per page (≤ max_page_size).")] = 50,
    page_token: Annotated[str | None, Query(description="`next_page_token` of a page.")] = None,
) -> JobPage:
    """The project's jobs, newest first, with cursor pagination."""
    check_page_size(page_size, settings.max_page_size)
    filters = job_repo.JobFilter(state, kind, created_after, created_before, parent_id)
    with issued_page_token():
        rows, token = job_repo.list_jobs(session, project.id, filters, page_size, page_token)
    return JobPage(items=[JobOut.of(row) for row in rows], next_page_token=token)


@router.get("/{job_id}", summary="Get a job", responses=JOB_PROBLEMS)
def get_job(job: ProjectJob) -> JobOut:
    """State, progress, result and error of one job."""
    return JobOut.of(job)


@router.post("/{job_id}/cancel", summary="Cancel a job", responses=JOB_PROBLEMS)
def cancel_job(job: ProjectJob, session: SessionDep, celery: CeleryDep) -> JobOut:
    """Queued → `cancelled` now; running → `cancelling` until the worker stops between steps
    (keeping its last checkpoint); finished jobs are unchanged. Safe to repeat. An
    experiment's unfinished runs are cancelled with it; it ends `cancelled` once they have."""
    return JobOut.of(cancellation.cancel_job(session, celery, job))


@router.delete(
    "/{job_id}",
    status_code=204,
    summary="Delete a finished job",
    responses={
        **JOB_PROBLEMS,
        409: problem(
            "The job has not finished, is one run of an experiment (delete the experiment), "
            "or is the `init_from` of an unfinished job."
        ),
    },
)
def delete_job(job: ProjectJob, session: SessionDep, storage: StorageDep) -> Response:
    """Delete a terminal job: its row, metrics, events, artifacts and stored files; an
    experiment goes with all its runs."""
    deletion.delete_job(session, storage, job)
    return Response(status_code=204)


@router.get(
    "/{job_id}/metrics",
    summary="Metrics of a job",
    responses={**JOB_PROBLEMS, 422: LIST_PROBLEMS[422]},
)
def list_job_metrics(
    job: ProjectJob,
    session: SessionDep,
    settings: SettingsDep,
    name: Annotated[str | None, Query(description="Exact metric name.")] = None,
    phase: Annotated[str | None, Query(description="`pretrain` or `train`.")] = None,
    epoch_min: Annotated[
        int | None, Query(ge=0, le=INTEGER_MAX, description="Lowest epoch.")
    ] = None,
    epoch_max: Annotated[
        int | None, Query(ge=0, le=INTEGER_MAX, description="Highest epoch.")
    ] = None,
    page_size: Annotated[int, Query(ge=1, description="Points per page.")] = 100,
    page_token: Annotated[str | None, Query(description="`next_page_token` of a page.")] = None,
) -> MetricPage:
    """Per-epoch metric points by phase (pretrain first), epoch, then name."""
    check_page_size(page_size, settings.max_page_size)
    filters = metric_repo.MetricFilter(name, phase, epoch_min, epoch_max)
    with issued_page_token():
        rows, token = metric_repo.list_metrics(session, job.id, filters, page_size, page_token)
    return MetricPage(items=[MetricPoint.of(row) for row in rows], next_page_token=token)


@router.get(
    "/{job_id}/events",
    summary="Live events of a job (SSE)",
    response_class=StreamingResponse,
    responses={
        **JOB_PROBLEMS,
        429: problem(
            "Too many open event streams (`max_streams_per_project` or "
            "`max_streams_per_process`); `Retry-After` says when to try again."
        ),
        200: {
            "description": "`text/event-stream`: `id` = event id, `event` = `state`, "
            "`progress` or `metrics`, `data` = JSON. Ends after the terminal state event.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
    },
)
async def job_events(
    job_id: str,
    request: Request,
    credentials: Credentials,
    last_event_id: Annotated[
        int | None,
        Header(
            alias="Last-Event-ID",
            ge=0,
            le=BIGINT_MAX,
            description="Resume after this event id (an `id` the stream sent).",
        ),
    ] = None,
) -> StreamingResponse:
    """The job's events from the start (or after ``Last-Event-ID``), then live ones: every
    state and metrics event, and of its progress events those of the last
    ``NOISEFA_PROGRESS_EVENT_RETENTION_S`` seconds (300 by default) and the latest one
    (older ones are pruned).

    Not ``ProjectJob``: the caller and the job are checked inside the stream's one short
    session (see :func:`~noisefa.service.sse.event_stream_response`), so no connection is
    held between dependency steps while a burst of streams opens.
    """
    after = last_event_id or 0

    def owner(session: Session) -> str:
        project = get_current_project(session, credentials)
        return get_project_job(job_id, session, project).project_id

    return await event_stream_response(
        request.state.event_hub,
        request.app.state.stream_slots,
        request.app.state.sessionmaker,
        owner,
        job_id,
        after,
    )


@router.get("/{job_id}/artifacts", summary="List artifacts of a job", responses=JOB_PROBLEMS)
def list_job_artifacts(job: ProjectJob, session: SessionDep) -> ArtifactList:
    """Checkpoints, results and reports of the job."""
    rows = artifact_repo.list_artifacts(session, job.id)
    return ArtifactList(items=[ArtifactOut.of(row) for row in rows])


@router.get(
    "/{job_id}/artifacts/{name:path}",
    summary="Download an artifact",
    response_class=StreamingResponse,
    responses={
        **JOB_PROBLEMS,
        200: {
            "description": "The file, streamed from object storage.",
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        },
        400: problem("The name could escape the job's folder."),
        409: problem("The stored file is damaged (fails its recorded checksum); not served."),
    },
)
def download_artifact(
    job: ProjectJob, name: str, session: SessionDep, storage: StorageDep
) -> StreamingResponse:
    """Stream one artifact; names are relative paths inside the job (no `..`, no `/` first)."""
    try:
        check_name(name)
    except UnsafeNameError as error:
        raise ProblemError(400, f"name: {error}", slug="unsafe-name") from error
    artifact = artifact_repo.get_artifact(session, job.id, name)
    if artifact is None:
        raise ProblemError(404, f"artifact {name!r} not found", slug="not-found")
    try:
        chunks = artifact_repo.verified_bytes(storage, artifact)
    except FileNotFoundError as error:
        logger.warning("artifact %s of job %s is missing from storage", name, job.id)
        raise ProblemError(404, f"artifact {name!r} not found", slug="not-found") from error
    except CorruptObjectError as error:
        logger.error("artifact %s of job %s is damaged in storage: %s", name, job.id, error)
        detail = f"artifact {name!r} is damaged in storage ({error}); it is not served"
        raise ProblemError(409, detail, slug="artifact-corrupt") from error
    filename = quote(name.rsplit("/", 1)[-1])
    return StreamingResponse(
        chunks,
        media_type=artifact.content_type,
        headers={
            "Content-Length": str(artifact.size),
            "Content-Disposition": f"attachment; filename*=UTF-8''{filename}",
        },
    )
