"""``/v1/jobs``: submit, read, list, cancel; metrics, events (SSE) and artifacts of a job.

Routes are thin: they validate at the edge, call repository functions and shape responses.
A job is committed to the database before it is put on the broker, so a failed enqueue
loses nothing (the reaper re-queues jobs that never started).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from celery import Celery
from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from noisefa.engine.contract.bodies import JobBody, parse_job
from noisefa.engine.contract.references import referenced_datasets

from ..broker import enqueue_finish_experiment, enqueue_job
from ..models import Job, Project
from ..pagination import BadPageToken
from ..problems import FieldError, Problem, ProblemError
from ..repositories import artifacts as artifact_repo
from ..repositories import datasets as dataset_repo
from ..repositories import experiments as experiment_repo
from ..repositories import jobs as job_repo
from ..repositories import metrics as metric_repo
from ..schemas import (
    ArtifactList,
    ArtifactOut,
    JobKind,
    JobOut,
    JobPage,
    JobState,
    MetricPage,
    MetricPoint,
)
from ..settings import Settings
from ..sse import stream_job_events
from ..storage import UnsafeNameError, check_name
from .deps import CeleryDep, CurrentProject, ProjectJob, SessionDep, SettingsDep, StorageDep

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


AUTH_PROBLEMS: dict[int | str, dict[str, Any]] = {401: _problem("Missing or invalid API key.")}
JOB_PROBLEMS = {
    **AUTH_PROBLEMS,
    404: _problem("No such job in the caller's project."),
    422: _problem("Invalid parameter; `errors` names it."),
}
LIST_PROBLEMS = {**AUTH_PROBLEMS, 422: _problem("Invalid filter, page size or page token.")}

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


def invalid_field(field: str, message: str) -> ProblemError:
    """A 422 problem naming one field."""
    return ProblemError(
        422,
        f"invalid field(s): {field} ({field}: {message})",
        slug="validation",
        title="Invalid request",
        errors=[FieldError(field=field, message=message)],
    )


def _check_page_size(page_size: int, settings_max: int) -> None:
    if page_size > settings_max:
        raise invalid_field("page_size", f"must be in [1, {settings_max}], got {page_size}")


def _accepted(response: Response, job: Job) -> JobOut:
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobOut.of(job)


def _replay(
    session: Session, project: Project, key: str, request_hash: str, ttl_s: float | None
) -> Job | None:
    """The first job of an Idempotency-Key, None when unused; 422 when the body differs."""
    record = job_repo.find_idempotent(session, project.id, key, ttl_s)
    if record is None:
        return None
    if record.request_hash != request_hash:
        raise invalid_field(
            "Idempotency-Key", "already used with another request body; use a new key"
        )
    return job_repo.get_job(session, project.id, record.job_id)


def _check_init_from(session: Session, project: Project, spec: JobBody) -> None:
    """``init_from`` (of a train or evaluate job) must name a succeeded job of the project."""
    if getattr(spec, "init_from", None) is None:
        return
    source = job_repo.get_job(session, project.id, spec.init_from)
    if source is None:
        raise ProblemError(
            404, f"init_from: job {spec.init_from!r} not found", slug="init-from-not-found"
        )
    if source.state != "succeeded":
        raise ProblemError(
            409,
            f"init_from: job {spec.init_from!r} is {source.state}; only a succeeded job's "
            "weights can start another job",
            slug="init-from-not-succeeded",
        )


def _check_uploads(session: Session, project: Project, spec: JobBody) -> None:
    """Every ``upload:<id>`` the job reads must be an upload of the project (404 naming it)."""
    refs = referenced_datasets(spec)
    missing = dataset_repo.missing_uploads(session, project.id, refs)
    if missing:
        raise ProblemError(
            404,
            "; ".join(f"{field}: upload {name!r} not found" for field, name in missing),
            slug="dataset-not-found",
            errors=[
                FieldError(field=field, message=f"upload {name!r} not found in this project")
                for field, name in missing
            ],
        )


@router.post(
    "",
    status_code=202,
    summary="Submit a job",
    response_description="The job was stored and queued; `Location` names it.",
    responses={
        **AUTH_PROBLEMS,
        404: _problem(
            "`init_from` names no job of this project, or a dataset `upload:<id>` names no "
            "upload of it; `errors` names the field."
        ),
        409: _problem(
            "`init_from` names a job that has not succeeded, or a request with the same "
            "`Idempotency-Key` is still in flight."
        ),
        413: _problem("Request body over the size limit."),
        422: _problem("Invalid spec or limit exceeded; `errors` names the fields."),
        429: _problem("Too many unfinished jobs in this project."),
    },
)
def submit_job(
    body: Annotated[dict[str, Any], Body()],
    request: Request,
    response: Response,
    session: SessionDep,
    project: CurrentProject,
    settings: SettingsDep,
    celery: CeleryDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JobOut:
    """Validate the spec against the deployment's limits, store the job, then enqueue it.

    `kind` picks the body: `pretrain` / `train` (a `JobSpec`), `evaluate` (an
    `EvaluateSpec`: a succeeded job's checkpoint under shifts) or `experiment` (an
    `ExperimentSpec`: conditions × seeds, run as child jobs listed with `?parent_id=`)."""
    _refuse_nul(body)
    spec = parse_job(body, settings.limits)  # ValidationError → 422 problem
    if not idempotency_key:
        job = _create(session, project, spec, settings, None)
    else:
        request_hash = hashlib.sha256(spec.canonical_json().encode()).hexdigest()
        with in_flight(request, project.id, idempotency_key) as claimed:
            if not claimed or not job_repo.lock_idempotency_key(
                session, project.id, idempotency_key
            ):
                raise _in_flight()
            ttl_s = settings.idempotency_ttl_s
            first = _replay(session, project, idempotency_key, request_hash, ttl_s)
            if first is not None:
                return _accepted(response, first)
            try:
                job = _create(session, project, spec, settings, (idempotency_key, request_hash))
            except IntegrityError:
                # Another API process committed the same key first (SQLite, several processes).
                session.rollback()
                first = _replay(session, project, idempotency_key, request_hash, None)
                if first is None:
                    raise
                return _accepted(response, first)
    try:
        enqueue_job(celery, job.id, job.queue)
    except Exception:
        logger.exception("job %s stored but not enqueued; the reaper will re-queue it", job.id)
    return _accepted(response, job)


def _refuse_nul(value: Any, field: str = "") -> None:
    """422 naming the first string (key or value) holding a NUL: the database cannot store it."""
    if isinstance(value, str):
        if "\x00" in value:
            raise invalid_field(field or "body", "NUL characters are not allowed")
    elif isinstance(value, dict):
        for key, item in value.items():
            path = f"{field}.{key}" if field else str(key)
            _refuse_nul(key, path)
            _refuse_nul(item, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_nul(item, f"{field}[{index}]")


def _create(
    session: Session,
    project: Project,
    spec: JobBody,
    settings: Settings,
    idempotency: tuple[str, str] | None,
) -> Job:
    """Check the project's quota and ``init_from``, then store the queued job. Commits."""
    unfinished = job_repo.count_unfinished(session, project.id)
    if unfinished >= settings.max_concurrent_jobs:
        raise ProblemError(
            429,
            f"max_concurrent_jobs: this project has {unfinished} unfinished jobs "
            f"(limit {settings.max_concurrent_jobs}); wait for some to finish",
            slug="too-many-jobs",
        )
    _check_init_from(session, project, spec)
    _check_uploads(session, project, spec)
    return job_repo.create_job(
        session, project.id, spec, max_attempts=settings.max_attempts, idempotency=idempotency
    )


def _in_flight() -> ProblemError:
    return ProblemError(
        409,
        "Idempotency-Key: a request with this key is still being processed; retry shortly "
        "to get its answer",
        slug="idempotency-key-in-flight",
    )


@contextmanager
def in_flight(request: Request, project_id: str, key: str) -> Iterator[bool]:
    """Claim ``key`` among this process's requests; yields False when another holds it."""
    guard: InFlightKeys = request.app.state.in_flight_keys
    claimed = guard.claim((project_id, key))
    try:
        yield claimed
    finally:
        if claimed:
            guard.release((project_id, key))


class InFlightKeys:
    """Idempotency keys whose first request this process is still answering."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: set[tuple[str, str]] = set()

    def claim(self, key: tuple[str, str]) -> bool:
        """True when ``key`` was free (and is now held)."""
        with self._lock:
            if key in self._keys:
                return False
            self._keys.add(key)
            return True

    def release(self, key: tuple[str, str]) -> None:
        """Free ``key``."""
        with self._lock:
            self._keys.discard(key)


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
    created_after: Annotated[datetime | None, Query(description="Created at or after.")] = None,
    created_before: Annotated[datetime | None, Query(description="Created before.")] = None,
    page_size: Annotated[int, Query(ge=1, description="Jobs per page (≤ max_page_size).")] = 50,
    page_token: Annotated[str | None, Query(description="`next_page_token` of a page.")] = None,
) -> JobPage:
    """The project's jobs, newest first, with cursor pagination."""
    _check_page_size(page_size, settings.max_page_size)
    filters = job_repo.JobFilter(state, kind, created_after, created_before, parent_id)
    try:
        rows, token = job_repo.list_jobs(session, project.id, filters, page_size, page_token)
    except BadPageToken as error:
        raise invalid_field("page_token", "not a token this API issued") from error
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
    cancelled = job_repo.cancel_job(session, job)
    if cancelled.kind == "experiment":
        experiment_repo.cancel_children(session, cancelled.id)
        session.refresh(cancelled)
    elif cancelled.parent_id is not None:
        _aggregate_if_due(session, celery, cancelled.id)
    return JobOut.of(cancelled)


def _aggregate_if_due(session: Session, celery: Celery, job_id: str) -> None:
    """A run cancelled while queued may have been its experiment's last live one."""
    due = experiment_repo.due_parent(session, job_id)
    if due is None:
        return
    try:
        enqueue_finish_experiment(celery, *due)
    except Exception:
        logger.warning("experiment %s: aggregate not sent; the reaper will", due[0], exc_info=True)


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
    epoch_min: Annotated[int | None, Query(ge=0, description="Lowest epoch.")] = None,
    epoch_max: Annotated[int | None, Query(ge=0, description="Highest epoch.")] = None,
    page_size: Annotated[int, Query(ge=1, description="Points per page.")] = 100,
    page_token: Annotated[str | None, Query(description="`next_page_token` of a page.")] = None,
) -> MetricPage:
    """Per-epoch metric points by phase (pretrain first), epoch, then name."""
    _check_page_size(page_size, settings.max_page_size)
    filters = metric_repo.MetricFilter(name, phase, epoch_min, epoch_max)
    try:
        rows, token = metric_repo.list_metrics(session, job.id, filters, page_size, page_token)
    except BadPageToken as error:
        raise invalid_field("page_token", "not a token this API issued") from error
    return MetricPage(items=[MetricPoint.of(row) for row in rows], next_page_token=token)


@router.get(
    "/{job_id}/events",
    summary="Live events of a job (SSE)",
    response_class=StreamingResponse,
    responses={
        **JOB_PROBLEMS,
        200: {
            "description": "`text/event-stream`: `id` = event id, `event` = `state`, "
            "`progress` or `metrics`, `data` = JSON. Ends after the terminal state event.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
    },
)
def job_events(
    job: ProjectJob,
    request: Request,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", description="Resume after this event id.")
    ] = None,
) -> StreamingResponse:
    """Every event of the job from the start (or after ``Last-Event-ID``), then live ones."""
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    stream = stream_job_events(request.app.state.sessionmaker, job.id, after, request)
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
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
        400: _problem("The name could escape the job's folder."),
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
        chunks = storage.iter_bytes(artifact.storage_key)
    except FileNotFoundError as error:
        logger.warning("artifact %s of job %s is missing from storage", name, job.id)
        raise ProblemError(404, f"artifact {name!r} not found", slug="not-found") from error
    filename = quote(name.rsplit("/", 1)[-1])
    return StreamingResponse(
        chunks,
        media_type=artifact.content_type,
        headers={
            "Content-Length": str(artifact.size),
            "Content-Disposition": f"attachment; filename*=UTF-8''{filename}",
        },
    )
