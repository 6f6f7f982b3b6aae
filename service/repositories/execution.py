"""What a worker writes while it runs a job, every write fenced by the attempt's lease.

``start_attempt`` moves a ``queued`` job to ``running`` with a conditional UPDATE, so two
workers can never both start it; it hands out a fresh ``lease_token``. Every later write
matches ``id``, ``lease_token`` and a live state, so a worker whose job was re-queued (its
heartbeat went stale) or finished elsewhere has its writes refused (they return False).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from noisefa.engine.contract.checkpoint_format import checkpoint_upload_id
from noisefa.engine.contract.states import TERMINAL_STATES, FailureReason, JobKind, JobState

from ..models import Artifact, CheckpointUpload, Job, utcnow
from ..storage import check_name
from . import checkpoints as checkpoint_repo
from .events import add_event, state_event_data

LIVE_STATES = (JobState.RUNNING, JobState.CANCELLING)
CHECKPOINT_PREFIX = "checkpoints/"


@dataclass(frozen=True)
class Attempt:
    """One worker's lease on a job: the token fences all of its writes."""

    job_id: str
    project_id: str
    kind: JobKind
    spec: dict
    attempt: int
    lease_token: str


def _fenced(*attempts: Attempt) -> list[ColumnElement[bool]]:
    """WHERE clauses of a write that only the lease holders of live jobs may make (the ids
    alone as well: an index lookup on every database)."""
    return [
        Job.id.in_([attempt.job_id for attempt in attempts]),
        tuple_(Job.id, Job.lease_token).in_([(a.job_id, a.lease_token) for a in attempts]),
        Job.state.in_(LIVE_STATES),
    ]


def lock_jobs_in_id_order(session: Session, job_ids: Collection[str]) -> None:
    """Lock the jobs' rows in id order, as :func:`.claims.claim_jobs` does, before writing
    several of them in one transaction: two such transactions then never wait on each
    other's rows in a cycle (a multi-row UPDATE locks in whatever order it scans). Postgres;
    SQLite has no row locks (a writer holds the whole database)."""
    if len(job_ids) > 1:
        session.execute(
            select(Job.id).where(Job.id.in_(job_ids)).order_by(Job.id).with_for_update()
        )


def touch_each(session: Session, attempts: Collection[Attempt], **values: Any) -> set[str]:
    """One fenced UPDATE of every attempt's job (heartbeat included) and ``values``; the ids
    of the jobs whose lease still holds. A Core statement: the ORM's bulk path costs more
    than the write itself on the worker's hot path."""
    now = utcnow()
    result = session.execute(
        update(Job.__table__)
        .where(*_fenced(*attempts))
        .values(heartbeat_at=now, updated_at=now, **values)
        .returning(Job.id)
    )
    return set(result.scalars())


def touch(session: Session, attempt: Attempt, **values: Any) -> bool:
    """A fenced UPDATE of the job (heartbeat included); True when the lease still holds."""
    return attempt.job_id in touch_each(session, [attempt], **values)


def start_attempt(session: Session, job_id: str) -> Attempt | None:
    """Claim a queued job: ``running``, attempt + 1, a new lease. Commits.

    A queued job whose cancel was requested ends ``cancelled`` here instead. Anything else
    (running elsewhere, terminal, missing) answers None.
    """
    now = utcnow()
    cancelled = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.QUEUED, Job.cancel_requested.is_(True))
        .values(state=JobState.CANCELLED, finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if cancelled.rowcount == 1:
        attempt_no = session.scalar(select(Job.attempt).where(Job.id == job_id)) or 0
        add_event(session, job_id, "state", state_event_data(JobState.CANCELLED, attempt_no))
        session.commit()
        return None
    token = uuid.uuid4().hex
    started = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.QUEUED, Job.cancel_requested.is_(False))
        .values(
            state=JobState.RUNNING,
            attempt=Job.attempt + 1,
            lease_token=token,
            started_at=func.coalesce(Job.started_at, now),
            heartbeat_at=now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if started.rowcount != 1:
        session.rollback()
        return None
    attempt = claimed_attempt(session, job_id, token)
    add_event(session, job_id, "state", state_event_data(JobState.RUNNING, attempt.attempt))
    session.commit()
    return attempt


def claimed_attempt(session: Session, job_id: str, token: str) -> Attempt:
    """The :class:`Attempt` of a job just claimed with lease ``token`` (read, not committed)."""
    row = session.execute(
        select(Job.project_id, Job.kind, Job.spec, Job.attempt).where(Job.id == job_id)
    ).one()
    return Attempt(
        job_id=job_id,
        project_id=row.project_id,
        kind=JobKind(row.kind),
        spec=row.spec,
        attempt=row.attempt,
        lease_token=token,
    )


def first_started_at(session: Session, job_id: str) -> datetime | None:
    """When the job's first attempt started (later attempts keep it): its time limit's origin."""
    return session.scalar(select(Job.started_at).where(Job.id == job_id))


def upsert(session: Session, table: Any, rows: list[dict], keys: list[str], set_: list[str]):
    """INSERT … ON CONFLICT (keys) DO UPDATE, in the dialect of the session's database."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=keys, set_={name: statement.excluded[name] for name in set_}
    )
    session.execute(statement, rows)  # many rows: one cached statement, executemany


def record_artifact(
    session: Session,
    attempt: Attempt,
    name: str,
    storage_key: str,
    size: int,
    content_type: str,
    *,
    sha256: str | None = None,
) -> bool:
    """Register (or replace) the job's artifact ``name`` stored at ``storage_key``, with the
    sha256 its reads are checked against (the worker always passes it). Commits."""
    ok = touch(session, attempt)
    if ok:
        row = {
            "job_id": attempt.job_id,
            "name": name,
            "storage_key": storage_key,
            "size": size,
            "sha256": sha256,
            "content_type": content_type,
            "created_at": utcnow(),
        }
        upsert(
            session,
            Artifact.__table__,
            [row],
            ["job_id", "name"],
            ["storage_key", "size", "sha256", "content_type", "created_at"],
        )
    session.commit()
    return ok


def delete_artifacts(session: Session, attempt: Attempt, names: Collection[str]) -> bool:
    """Remove the rows of the job's artifacts ``names`` (their objects are the caller's to
    delete, after this commits: a listed artifact is always downloadable). Commits."""
    ok = touch(session, attempt)
    if ok and names:
        session.execute(
            delete(Artifact).where(Artifact.job_id == attempt.job_id, Artifact.name.in_(names))
        )
    session.commit()
    return ok


def record_checkpoint_skipped(session: Session, attempt: Attempt, name: str, why: str) -> bool:
    """Add a ``checkpoint_skipped`` event: the attempt passed over a damaged checkpoint."""
    ok = touch(session, attempt)
    if ok:
        data = {"name": name, "reason": why, "attempt": attempt.attempt}
        add_event(session, attempt.job_id, "checkpoint_skipped", data)
    session.commit()
    return ok


def finish(
    session: Session,
    attempt: Attempt,
    state: JobState,
    *,
    result: dict | None = None,
    error_reason: FailureReason | None = None,
    error_message: str | None = None,
) -> bool:
    """End the attempt in a terminal state (with result or error) and add a state event."""
    assert state in TERMINAL_STATES, f"state must be one of {sorted(TERMINAL_STATES)}"
    now = utcnow()
    done = session.execute(
        update(Job)
        .where(*_fenced(attempt))
        .values(
            state=state,
            finished_at=now,
            updated_at=now,
            heartbeat_at=now,
            result=result,
            error_reason=error_reason,
            error_message=error_message,
        )
        .execution_options(synchronize_session=False)
    )
    ok = done.rowcount == 1
    if ok:
        data = state_event_data(state, attempt.attempt, error_reason, error_message)
        add_event(session, attempt.job_id, "state", data)
    session.commit()
    return ok


def checkpoint_artifacts(session: Session, job_id: str) -> list[Artifact]:
    """The job's ``checkpoints/…`` artifacts, newest written first (a resumed attempt starts
    from the first intact one; retention keeps the first few)."""
    return list(
        session.scalars(
            select(Artifact)
            .where(
                Artifact.job_id == job_id,
                Artifact.name.startswith(CHECKPOINT_PREFIX, autoescape=True),
            )
            .order_by(Artifact.created_at.desc(), Artifact.id.desc())
        )
    )


def init_checkpoint_artifact(
    session: Session, project_id: str, init_from: str
) -> Artifact | CheckpointUpload | None:
    """What ``init_from`` starts from: the project's uploaded checkpoint for
    ``checkpoint:<id>``, else the final checkpoint of the project's succeeded job
    ``init_from`` (``result["final_checkpoint"]``); None when there is none."""
    upload_id = checkpoint_upload_id(init_from)
    if upload_id is not None:
        return checkpoint_repo.get_upload(session, project_id, upload_id)
    job_id = init_from
    result = session.scalar(
        select(Job.result).where(
            Job.id == job_id, Job.project_id == project_id, Job.state == JobState.SUCCEEDED
        )
    )
    name = (result or {}).get("final_checkpoint")
    if not name:
        return None
    return session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name))


def artifact_key(project_id: str, job_id: str, name: str) -> str:
    """The storage key of a job's artifact: ``<project_id>/jobs/<job_id>/<name>``."""
    return f"{project_id}/jobs/{job_id}/{check_name(name)}"
