"""Experiments in the database: an experiment job's children, its fan-out and its finish.

The database is the only record of where an experiment stands; the broker carries nothing
but "run job X" and "aggregate experiment X", and either may be lost or duplicated:

- **Fan-out** (:func:`create_children`) inserts every (condition, seed) child in one
  transaction that first takes the parent's row with a lease-fenced UPDATE, so a retried
  fan-out finds the children already there and a concurrent cancel is ordered before or
  after it, never in between.
- **Waiting** holds no worker: the parent stays ``running`` with no heartbeat (the reaper
  skips experiments that have children) until its children are terminal.
- **Finish** (:func:`claim_finish`) is one conditional UPDATE: "parent live AND it has
  children AND none is live" hands out a fresh lease; whoever sends "aggregate" (the task
  of the last child to end, or the reaper's sweep after a lost message) only suggests it,
  and the last claimant's lease fences any earlier one.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session, aliased

from noisefa.engine.contract.spec import JobSpec
from noisefa.engine.contract.states import TERMINAL_STATES, JobKind, JobState

from ..models import Job, JobMetric, utcnow
from .claims import claim_jobs
from .events import add_event, state_event_data
from .execution import LIVE_STATES, Attempt, claimed_attempt
from .jobs import new_job


def _live_children_of(parent_id_column) -> exists:
    """``EXISTS`` a child of the parent that is not terminal."""
    child = aliased(Job)
    return exists().where(child.parent_id == parent_id_column, child.state.not_in(TERMINAL_STATES))


def _children_of(parent_id_column) -> exists:
    child = aliased(Job)
    return exists().where(child.parent_id == parent_id_column)


def create_children(
    session: Session, attempt: Attempt, children: Mapping[str, list[JobSpec]], max_attempts: int
) -> list[tuple[str, str]] | None:
    """Insert one queued child per (condition, seed) unless the parent has them. Commits.

    Returns ``(job_id, queue)`` of the parent's children still queued (to send to the
    broker: new ones, or those of an earlier fan-out whose messages may be lost); ``None``
    when the lease is lost or the parent's cancel was asked (the caller stops).
    """
    now = utcnow()
    held = session.execute(
        update(Job)
        .where(
            Job.id == attempt.job_id,
            Job.lease_token == attempt.lease_token,
            Job.state.in_(LIVE_STATES),
        )
        .values(heartbeat_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if held.rowcount != 1:
        session.rollback()
        return None
    if session.scalar(select(Job.cancel_requested).where(Job.id == attempt.job_id)):
        session.rollback()
        return None
    existing = list(session.scalars(select(Job).where(Job.parent_id == attempt.job_id)))
    if not existing:
        for condition, specs in children.items():
            for spec in specs:
                child = new_job(
                    attempt.project_id,
                    spec,
                    max_attempts=max_attempts,
                    id=uuid.uuid4().hex,
                    parent_id=attempt.job_id,
                    condition=condition,
                    created_at=now,
                    updated_at=now,
                )
                session.add(child)
                existing.append(child)
        session.flush()
        for child in existing:
            add_event(session, child.id, "state", state_event_data(JobState.QUEUED, 0))
        progress = children_progress(0, len(existing))
        session.execute(
            update(Job)
            .where(Job.id == attempt.job_id)
            .values(progress=progress)
            .execution_options(synchronize_session=False)
        )
        add_event(session, attempt.job_id, "progress", progress)
    queued = [(child.id, child.queue) for child in existing if child.state == JobState.QUEUED]
    session.commit()
    return queued


def children_progress(done: int, total: int) -> dict[str, Any]:
    """An experiment's ``progress``: how many of its runs have ended (in any terminal state)."""
    return {"phase": JobKind.EXPERIMENT, "children_done": done, "children_total": total}


def parents_of(session: Session, job_ids: Sequence[str]) -> dict[str, str]:
    """The experiments the jobs ``job_ids`` are runs of: each parent id, once, with the first
    of its runs among them (jobs that are no run are left out). Reads only."""
    rows = session.execute(
        select(Job.id, Job.parent_id).where(Job.id.in_(list(job_ids)), Job.parent_id.is_not(None))
    ).all()
    session.commit()
    parent = {job_id: parent_id for job_id, parent_id in rows}
    first: dict[str, str] = {}
    for job_id in job_ids:
        if job_id in parent:
            first.setdefault(parent[job_id], job_id)
    return first


def record_children_done(session: Session, parent_id: str) -> dict[str, Any] | None:
    """Store the live experiment's :func:`children_progress` and add a ``progress`` event;
    the progress stored, None when the experiment has ended. Commits. Called after each of
    its runs ends and when it is aggregated.

    The parent's row is locked (a no-op UPDATE) before the children are counted, so of two
    runs ending at once the later count is written last and the stored number never falls.
    """
    locked = session.execute(
        update(Job)
        .where(Job.id == parent_id, Job.state.in_(LIVE_STATES))
        .values(progress=Job.progress)
        .execution_options(synchronize_session=False)
    )
    if locked.rowcount != 1:
        session.rollback()
        return None
    counts = session.execute(
        select(Job.state, func.count()).where(Job.parent_id == parent_id).group_by(Job.state)
    ).all()
    total = sum(count for _, count in counts)
    done = sum(count for state, count in counts if state in TERMINAL_STATES)
    progress = children_progress(done, total)
    session.execute(
        update(Job)
        .where(Job.id == parent_id)
        .values(progress=progress)
        .execution_options(synchronize_session=False)
    )
    add_event(session, parent_id, "progress", progress)
    session.commit()
    return progress


def children(session: Session, parent_id: str) -> list[Job]:
    """The experiment's children, oldest first (the fan-out order: condition, then seed)."""
    return list(
        session.scalars(
            select(Job).where(Job.parent_id == parent_id).order_by(Job.created_at, Job.id)
        )
    )


def histories(session: Session, job_ids: list[str]) -> dict[str, list[dict]]:
    """Job id → its metric points as the engine writes them (``phase, epoch, name, value``)."""
    found: dict[str, list[dict]] = {job_id: [] for job_id in job_ids}
    rows = session.execute(
        select(JobMetric.job_id, JobMetric.phase, JobMetric.epoch, JobMetric.name, JobMetric.value)
        .where(JobMetric.job_id.in_(job_ids))
        .order_by(JobMetric.job_id, JobMetric.id)
    )
    for job_id, phase, epoch, name, value in rows:
        found[job_id].append({"phase": phase, "epoch": epoch, "name": name, "value": value})
    return found


def due_parent(session: Session, job_id: str) -> tuple[str, str] | None:
    """``(parent_id, queue)`` when ``job_id`` is an experiment child and its parent is live
    with no live child left (time to aggregate); else None. Reads only."""
    parent = aliased(Job)
    row = session.execute(
        select(parent.id, parent.queue)
        .join(Job, Job.parent_id == parent.id)
        .where(
            Job.id == job_id,
            parent.state.in_(LIVE_STATES),
            ~_live_children_of(parent.id),
        )
    ).first()
    session.commit()
    return (row.id, row.queue) if row is not None else None


def claim_finish(session: Session, parent_id: str) -> Attempt | None:
    """Take a fresh lease on a live experiment whose children have all ended. Commits.

    None when it is not due (a child is live, it has no children yet, or it already ended).
    """
    token = uuid.uuid4().hex
    now = utcnow()
    claimed = session.execute(
        update(Job)
        .where(
            Job.id == parent_id,
            Job.kind == JobKind.EXPERIMENT,
            Job.state.in_(LIVE_STATES),
            _children_of(Job.id),
            ~_live_children_of(Job.id),
        )
        .values(lease_token=token, heartbeat_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    if claimed.rowcount != 1:
        session.rollback()
        return None
    attempt = claimed_attempt(session, parent_id, token)
    session.commit()
    return attempt


def cancel_requested(session: Session, job_id: str) -> bool:
    """Whether the job's cancel was asked."""
    flag = session.scalar(select(Job.cancel_requested).where(Job.id == job_id))
    session.commit()
    return bool(flag)


def cancel_children(session: Session, parent_id: str) -> None:
    """Cancel the experiment's unfinished children (queued → ``cancelled``, running →
    ``cancelling``); when none is left live, the cancelling parent ends ``cancelled``. Commits.
    """
    now = utcnow()
    for child in children(session, parent_id):
        new_state = None
        done = session.execute(
            update(Job)
            .where(Job.id == child.id, Job.state == JobState.QUEUED)
            .values(
                state=JobState.CANCELLED, cancel_requested=True, finished_at=now, updated_at=now
            )
            .execution_options(synchronize_session=False)
        )
        if done.rowcount == 1:
            new_state = JobState.CANCELLED
        else:
            done = session.execute(
                update(Job)
                .where(Job.id == child.id, Job.state == JobState.RUNNING)
                .values(state=JobState.CANCELLING, cancel_requested=True, updated_at=now)
                .execution_options(synchronize_session=False)
            )
            new_state = JobState.CANCELLING if done.rowcount == 1 else None
        if new_state is not None:
            add_event(session, child.id, "state", state_event_data(new_state, child.attempt))
    ended = session.execute(
        update(Job)
        .where(
            Job.id == parent_id,
            Job.state == JobState.CANCELLING,
            ~_live_children_of(Job.id),
        )
        .values(state=JobState.CANCELLED, finished_at=now, updated_at=now, heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    if ended.rowcount == 1:
        attempt = session.scalar(select(Job.attempt).where(Job.id == parent_id)) or 0
        add_event(session, parent_id, "state", state_event_data(JobState.CANCELLED, attempt))
    session.commit()


def stalled_experiments(session: Session, older_than_s: float) -> list[tuple[str, str]]:
    """``(parent_id, queue)`` of live experiments whose children have all ended but which
    were not touched for ``older_than_s`` (their "aggregate" message was lost, or the
    worker aggregating died). ``updated_at`` is bumped so each is re-sent once per interval.
    Commits."""
    now = utcnow()
    cutoff = now - timedelta(seconds=older_than_s)
    due = [
        Job.kind == JobKind.EXPERIMENT,
        Job.state.in_(LIVE_STATES),
        Job.updated_at < cutoff,
        _children_of(Job.id),
        ~_live_children_of(Job.id),
    ]
    return claim_jobs(session, due, {"updated_at": now})
