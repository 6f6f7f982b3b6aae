"""Jobs as the API sees them: create, read, list and cancel, always scoped to a project."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from noisefa.engine.contract.bodies import JobBody
from noisefa.engine.contract.states import TERMINAL_STATES, JobKind, JobState

from ..broker import queue_for
from ..models import IdempotencyKey, Job, utcnow
from ..pagination import BadPageToken, decode_token, encode_token
from .events import add_event, state_event_data


def new_job(project_id: str, spec: JobBody, *, max_attempts: int, **fields: Any) -> Job:
    """A queued job row for ``spec`` (not yet added to a session); ``fields`` set the rest."""
    return Job(
        project_id=project_id,
        kind=spec.kind,
        state=JobState.QUEUED,
        spec=spec.model_dump(mode="json"),
        queue=queue_for(spec),
        max_attempts=max_attempts,
        attempt=0,
        cancel_requested=False,
        **fields,
    )


def create_job(
    session: Session,
    project_id: str,
    spec: JobBody,
    *,
    max_attempts: int,
    idempotency: tuple[str, str] | None = None,
    hold_until: datetime | None = None,
) -> Job:
    """Insert a queued job, its first ``state`` event and its idempotency key. Commits.

    ``idempotency`` is ``(key, request_hash)``; a concurrent duplicate makes the commit raise
    ``IntegrityError`` (the caller answers with the first job). ``hold_until``: the job waits
    unsent for a pack until then (:mod:`..held_jobs`).
    """
    job = new_job(project_id, spec, max_attempts=max_attempts, hold_until=hold_until)
    session.add(job)
    session.flush()
    add_event(session, job.id, "state", state_event_data(JobState.QUEUED, 0))
    if idempotency is not None:
        key, request_hash = idempotency
        session.add(
            IdempotencyKey(project_id=project_id, key=key, request_hash=request_hash, job_id=job.id)
        )
    session.commit()
    return job


def get_job(session: Session, project_id: str, job_id: str) -> Job | None:
    """The project's job ``job_id``; None for unknown ids and other projects' jobs alike."""
    return session.scalar(select(Job).where(Job.id == job_id, Job.project_id == project_id))


def find_idempotent(
    session: Session, project_id: str, key: str, ttl_s: float | None
) -> IdempotencyKey | None:
    """The live record of ``key`` for the project; None when unused or expired.

    An expired record is deleted in the caller's transaction (committed with the new job).
    ``ttl_s=None`` ignores expiry (a record just committed by a concurrent request).
    """
    record = session.get(IdempotencyKey, (project_id, key))
    if record is None or ttl_s is None:
        return record
    if _aware(record.created_at) < utcnow() - timedelta(seconds=ttl_s):
        session.delete(record)
        session.flush()
        return None
    return record


def delete_expired_idempotency_keys(session: Session, ttl_s: float) -> int:
    """Delete records older than ``ttl_s``; how many went. Commits."""
    cutoff = utcnow() - timedelta(seconds=ttl_s)
    deleted = session.execute(
        delete(IdempotencyKey)
        .where(IdempotencyKey.created_at < cutoff)
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return deleted.rowcount or 0


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def count_unfinished(session: Session, project_id: str) -> int:
    """Jobs of the project not yet in a terminal state (the concurrency quota)."""
    return session.scalar(
        select(func.count())
        .select_from(Job)
        .where(Job.project_id == project_id, Job.state.not_in(TERMINAL_STATES))
    )


@dataclass(frozen=True)
class JobFilter:
    """Filters of ``GET /v1/jobs``; None means any."""

    state: JobState | None = None
    kind: JobKind | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    parent_id: str | None = None


def _utc(value: datetime) -> datetime:
    """Times without an offset are UTC (SQLite compares stored UTC text, so convert first)."""
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def list_jobs(
    session: Session,
    project_id: str,
    filters: JobFilter,
    page_size: int,
    page_token: str | None = None,
) -> tuple[list[Job], str | None]:
    """A page of the project's jobs, newest first, and the token of the next page."""
    query = select(Job).where(Job.project_id == project_id)
    if filters.state is not None:
        query = query.where(Job.state == filters.state)
    if filters.kind is not None:
        query = query.where(Job.kind == filters.kind)
    if filters.parent_id is not None:
        query = query.where(Job.parent_id == filters.parent_id)
    if filters.created_after is not None:
        query = query.where(Job.created_at >= _utc(filters.created_after))
    if filters.created_before is not None:
        query = query.where(Job.created_at < _utc(filters.created_before))
    if page_token is not None:
        created_text, last_id = decode_token(page_token, 2)
        try:
            created = datetime.fromisoformat(created_text)
        except (TypeError, ValueError) as error:
            raise BadPageToken("page_token: not a token this API issued") from error
        query = query.where(
            or_(Job.created_at < created, (Job.created_at == created) & (Job.id < str(last_id)))
        )
    rows = list(
        session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(page_size + 1))
    )
    if len(rows) <= page_size:
        return rows, None
    last = rows[page_size - 1]
    return rows[:page_size], encode_token(last.created_at.isoformat(), last.id)


def cancel_job(session: Session, job: Job) -> Job:
    """Cancel gracefully: queued → ``cancelled`` now; running → ``cancelling`` (the worker
    stops between steps); otherwise unchanged. Conditional updates make it safe against a
    worker starting or finishing the job at the same moment. Commits; returns the fresh row.
    """
    now = utcnow()
    done = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.state == JobState.QUEUED)
        .values(state=JobState.CANCELLED, cancel_requested=True, finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    new_state = JobState.CANCELLED if done.rowcount == 1 else None
    if new_state is None:
        done = session.execute(
            update(Job)
            .where(Job.id == job.id, Job.state == JobState.RUNNING)
            .values(state=JobState.CANCELLING, cancel_requested=True, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        new_state = JobState.CANCELLING if done.rowcount == 1 else None
    if new_state is not None:
        attempt = session.scalar(select(Job.attempt).where(Job.id == job.id)) or 0
        add_event(session, job.id, "state", state_event_data(new_state, attempt))
    session.commit()
    return session.scalars(
        select(Job).where(Job.id == job.id).execution_options(populate_existing=True)
    ).one()


def count_by_state(session: Session) -> dict[str, int]:
    """Jobs per state across all projects (for ``/metrics``)."""
    rows = session.execute(select(Job.state, func.count()).group_by(Job.state))
    return {state: count for state, count in rows}


def finished_durations(session: Session) -> list[float]:
    """Run time in seconds of every finished job that started (for ``/metrics``)."""
    rows = session.execute(
        select(Job.started_at, Job.finished_at).where(
            Job.finished_at.is_not(None), Job.started_at.is_not(None)
        )
    )
    return [max((finished - started).total_seconds(), 0.0) for started, finished in rows]
