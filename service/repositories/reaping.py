"""What the reaper sweeps: jobs whose worker died (stale heartbeats) and queued jobs whose
broker message may be lost; and the held standalone jobs due to be sent as packs. Every move
is a conditional UPDATE, so sweeps from several replicas move each job once.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from noisefa.engine.contract.states import FailureReason, JobState

from ..models import Job, utcnow
from .claims import claim_jobs
from .events import add_event, state_event_data
from .execution import LIVE_STATES


@dataclass(frozen=True)
class Reaped:
    """A job the reaper moved: ``queued`` ones must be enqueued again on ``queue``."""

    job_id: str
    queue: str
    state: JobState


def reap_stale(session: Session, heartbeat_timeout_s: float) -> list[Reaped]:
    """Sweep live jobs whose heartbeat is older than the timeout (their worker died). Commits.

    Each is re-queued to resume from its last checkpoint as a new attempt (clearing the lease
    fences the old worker), or fails ``worker_lost`` once ``max_attempts`` are spent; a
    silent ``cancelling`` job ends ``cancelled``. Every move is a conditional UPDATE on the
    row as read, so concurrent sweeps from several replicas move each job once. An experiment
    whose runs exist is waiting on them, not on a worker, so it has no heartbeat to go stale
    (:mod:`.experiments` sweeps those); one that died before creating them is reaped here.
    """
    now = utcnow()
    cutoff = now - timedelta(seconds=heartbeat_timeout_s)
    child = aliased(Job)
    rows = session.execute(
        select(Job.id, Job.state, Job.lease_token, Job.attempt, Job.max_attempts, Job.queue).where(
            Job.state.in_(LIVE_STATES),
            Job.heartbeat_at < cutoff,
            ~exists().where(child.parent_id == Job.id),
        )
    ).all()
    reaped = []
    for row in rows:
        reason = message = None
        if row.state == JobState.CANCELLING:
            values = {"state": JobState.CANCELLED, "finished_at": now}
        elif row.attempt >= row.max_attempts:
            reason = FailureReason.WORKER_LOST
            message = f"no heartbeat for {heartbeat_timeout_s:g} s after {row.attempt} attempts"
            values = {
                "state": JobState.FAILED,
                "finished_at": now,
                "error_reason": reason,
                "error_message": message,
            }
        else:
            values = {"state": JobState.QUEUED, "lease_token": None}
        moved = session.execute(
            update(Job)
            .where(
                Job.id == row.id,
                Job.state == row.state,
                Job.lease_token == row.lease_token,
                Job.heartbeat_at < cutoff,
            )
            .values(updated_at=now, **values)
            .execution_options(synchronize_session=False)
        )
        if moved.rowcount == 1:
            data = state_event_data(values["state"], row.attempt, reason, message)
            add_event(session, row.id, "state", data)
            reaped.append(Reaped(job_id=row.id, queue=row.queue, state=values["state"]))
    session.commit()
    return reaped


def stale_queued_jobs(
    session: Session,
    older_than_s: float,
    queues: Collection[str] | None = None,
    exclude: Collection[str] = (),
) -> list[tuple[str, str]]:
    """``(job_id, queue)`` of jobs queued (or last re-sent) longer ago than ``older_than_s``,
    on ``queues`` (default all), but for those in ``exclude`` (a waiting message names them).

    Their message may have been lost (the API commits before it enqueues); the caller sends
    them again. ``updated_at`` is bumped so each is re-sent at most once per interval, and a
    duplicate message is harmless: ``start_attempt`` lets one attempt start. A job held for a
    pack (``hold_until``) has had no message yet, so none was lost: it is included only once
    its hold has been over for ``older_than_s`` too (no packer released it: the API runs
    without ``pack_window_s`` now), and it is no longer held from then on. Commits.
    """
    now = utcnow()
    cutoff = now - timedelta(seconds=older_than_s)
    due = [
        Job.state == JobState.QUEUED,
        Job.updated_at < cutoff,
        or_(Job.hold_until.is_(None), Job.hold_until < cutoff),
    ]
    if queues is not None:
        due.append(Job.queue.in_(list(queues)))
    return claim_jobs(session, due, {"updated_at": now, "hold_until": None}, skip=exclude)


def release_held_jobs(session: Session) -> list[tuple[str, str]]:
    """``(job_id, queue)`` of the held jobs to send now (oldest first within each project's
    queue), each no longer held from now on (the caller sends them): once one job of a
    project's queue is due, every job of that project held on that queue, so the jobs
    submitted within a window of the first go out together, whatever the packer's rounds.
    ``updated_at`` is bumped, so the reaper re-sends one whose message is then lost only
    after ``requeue_after_s``. Commits."""
    now = utcnow()
    held = [Job.state == JobState.QUEUED, Job.hold_until.is_not(None)]
    due = session.execute(
        select(Job.project_id, Job.queue).where(*held, Job.hold_until <= now).distinct()
    ).all()
    session.commit()  # end the read
    released: list[tuple[str, str]] = []
    for project_id, queue in due:
        group = [*held, Job.project_id == project_id, Job.queue == queue]
        released += claim_jobs(
            session, group, {"hold_until": None, "updated_at": now}, oldest_first=True
        )
    return released


def queued_counts(session: Session) -> dict[str, int]:
    """Jobs in state ``queued`` per broker queue."""
    rows = session.execute(
        select(Job.queue, func.count()).where(Job.state == JobState.QUEUED).group_by(Job.queue)
    )
    session.commit()
    return {queue: count for queue, count in rows}
