"""Job events: the rows the SSE streams carry (state changes, progress, per-epoch metrics).

A new stream replays one job's history (:func:`events_after`); the event hub then reads the
new events of every watched job in one query per tick (:func:`events_of_jobs_after`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, insert, or_, select
from sqlalchemy.orm import Session, aliased

from noisefa.engine.contract.states import FailureReason, JobState

from ..models import Job, JobEvent, utcnow

# ``checkpoint_skipped``: a resuming attempt passed over a damaged stored checkpoint.
EVENT_TYPES = ("state", "progress", "metrics", "checkpoint_skipped")


def add_event(session: Session, job_id: str, type_: str, data: dict[str, Any]) -> None:
    """Stage one event in the caller's transaction (it commits with the change it reports)."""
    assert type_ in EVENT_TYPES, f"event type must be one of {EVENT_TYPES}, got {type_!r}"
    session.add(JobEvent(job_id=job_id, type=type_, data=data))


def insert_events(session: Session, type_: str, events: Sequence[tuple[str, dict[str, Any]]]):
    """Insert events of one type, ``(job_id, data)`` each, as one statement in the caller's
    transaction: the worker's repeated writes (progress, metrics) skip the ORM's unit of work,
    whose per-object cost is most of theirs."""
    assert type_ in EVENT_TYPES, f"event type must be one of {EVENT_TYPES}, got {type_!r}"
    if events:
        now = utcnow()
        rows = [
            {"job_id": job_id, "type": type_, "data": data, "created_at": now}
            for job_id, data in events
        ]
        session.execute(insert(JobEvent.__table__), rows)


PRUNE_BATCH = 10_000  # progress events deleted per statement (and transaction)


def prune_superseded_progress(
    session: Session, cutoff: datetime, since: datetime | None = None
) -> int:
    """Delete up to ``PRUNE_BATCH`` ``progress`` events created before ``cutoff`` (and, given
    ``since``, not before it) that a later progress event of the same job supersedes; how
    many went. Commits. The reaper calls it until a batch comes back short.

    A running job writes one every half second (a pack: one per member), so a long job's
    would otherwise grow ``job_events`` without bound. A progress event is a snapshot, not a
    change: a stream that replays a job's history gets its recent ones and the latest, and
    every state and metrics event is kept.
    """
    candidate, later = aliased(JobEvent), aliased(JobEvent)
    aged = [candidate.type == "progress", candidate.created_at < cutoff]
    if since is not None:
        aged.append(candidate.created_at >= since)
    superseded = exists().where(
        later.job_id == candidate.job_id, later.type == "progress", later.id > candidate.id
    )
    batch = select(candidate.id).where(*aged, superseded).limit(PRUNE_BATCH)
    deleted = session.execute(
        delete(JobEvent).where(JobEvent.id.in_(batch)).execution_options(synchronize_session=False)
    )
    session.commit()
    return deleted.rowcount or 0


def state_event_data(
    state: JobState, attempt: int, reason: FailureReason | None = None, message: str | None = None
) -> dict[str, Any]:
    """The data of a ``state`` event: state and attempt, plus reason/message on failures."""
    data: dict[str, Any] = {"state": state, "attempt": attempt}
    if reason is not None:
        data["reason"] = reason
    if message is not None:
        data["message"] = message
    return data


def events_after(session: Session, job_id: str, after_id: int, limit: int = 500) -> list[JobEvent]:
    """The job's events with an id above ``after_id``, oldest first."""
    return list(
        session.scalars(
            select(JobEvent)
            .where(JobEvent.job_id == job_id, JobEvent.id > after_id)
            .order_by(JobEvent.id)
            .limit(limit)
        )
    )


def events_of_jobs_after(
    session: Session, cursors: Mapping[str, int], limit: int
) -> list[JobEvent]:
    """The events of every job in ``cursors`` with an id above that job's cursor, oldest
    first, at most ``limit`` of them.

    Each job gets its own ``job_id = ? AND id > ?`` branch rather than one shared lower
    bound: a job whose last event is old would otherwise make every read go through the
    whole recent history of the busy ones.
    """
    if not cursors:
        return []
    newer = or_(
        *(and_(JobEvent.job_id == job, JobEvent.id > after) for job, after in cursors.items())
    )
    return list(session.scalars(select(JobEvent).where(newer).order_by(JobEvent.id).limit(limit)))


def job_states(session: Session, job_ids: Collection[str]) -> dict[str, str]:
    """The state of each job that exists, by id (a deleted job is simply absent)."""
    if not job_ids:
        return {}
    rows = session.execute(select(Job.id, Job.state).where(Job.id.in_(list(job_ids))))
    return {job_id: state for job_id, state in rows}
