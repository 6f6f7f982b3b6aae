"""What a running attempt writes over and over: heartbeats, progress, epochs' metrics, and
its polls for a cancel; each write fenced by the attempt's lease (:func:`.execution.touch`).

A worker task writes these for every member of its pack at once (the members step, and end
their epochs, together), so each write takes many attempts and makes one transaction of a
few statements, whatever the number of members: on the worker, a statement costs mostly the
client's own CPU (building, binding, the ORM's unit of work), which the training thread
waits for. Each transaction first locks its jobs' rows in id order
(:func:`.execution.lock_jobs_in_id_order`): the epoch writer and the monitor write the same
rows from two threads. The one-attempt forms are the same writes of one.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import Job, JobMetric
from .events import insert_events
from .execution import Attempt, lock_jobs_in_id_order, touch, touch_each, upsert


@dataclass(frozen=True)
class Beat:
    """An attempt's sign of life: its latest progress (stored with a ``progress`` event), or
    with ``progress`` None a bare heartbeat."""

    attempt: Attempt
    progress: dict[str, Any] | None = None


@dataclass(frozen=True)
class EpochMetrics:
    """One epoch's metrics of one attempt."""

    attempt: Attempt
    phase: str
    epoch: int
    metrics: dict[str, float]


def report_beats(session: Session, beats: Sequence[Beat]) -> list[bool]:
    """Write every beat in one transaction; per beat whether its lease held. Commits.

    Bare heartbeats are one UPDATE; each progress is its own (they differ), then their
    events are one INSERT.
    """
    lock_jobs_in_id_order(session, {beat.attempt.job_id for beat in beats})
    bare = [beat.attempt for beat in beats if beat.progress is None]
    held = touch_each(session, bare) if bare else set()
    progressed = [beat for beat in beats if beat.progress is not None]
    for beat in progressed:
        if touch(session, beat.attempt, progress=beat.progress):
            held.add(beat.attempt.job_id)
    events = [(b.attempt.job_id, b.progress) for b in progressed if b.attempt.job_id in held]
    insert_events(session, "progress", events)
    session.commit()
    return [beat.attempt.job_id in held for beat in beats]


def record_epochs(session: Session, epochs: Sequence[EpochMetrics]) -> list[bool]:
    """Write each epoch's metrics (a resumed epoch overwrites) and a ``metrics`` event in one
    transaction; per epoch whether its lease held. Commits.

    A few statements whatever the number of epochs: the lock, the fenced touch of all their
    jobs, the metric rows, the events.
    """
    lock_jobs_in_id_order(session, {record.attempt.job_id for record in epochs})
    held = touch_each(session, [record.attempt for record in epochs]) if epochs else set()
    stored = [record for record in epochs if record.attempt.job_id in held]
    rows = {
        (record.attempt.job_id, record.phase, name, record.epoch): value
        for record in stored
        for name, value in record.metrics.items()
    }  # keyed: one statement may not update a row twice
    if rows:
        upsert(
            session,
            JobMetric.__table__,
            [
                {"job_id": job_id, "phase": phase, "name": name, "epoch": epoch, "value": value}
                for (job_id, phase, name, epoch), value in rows.items()
            ],
            ["job_id", "phase", "name", "epoch"],
            ["value"],
        )
    events = [
        (r.attempt.job_id, {"phase": r.phase, "epoch": r.epoch, "metrics": r.metrics})
        for r in stored
    ]
    insert_events(session, "metrics", events)
    session.commit()
    return [record.attempt.job_id in held for record in epochs]


def cancels_requested(session: Session, job_ids: Collection[str]) -> set[str]:
    """The jobs of ``job_ids`` that should stop: cancel asked, or the job is gone."""
    flags = dict(
        session.execute(select(Job.id, Job.cancel_requested).where(Job.id.in_(job_ids))).all()
    )
    session.commit()  # end the read transaction so the next poll sees new commits
    return {job_id for job_id in job_ids if flags.get(job_id, True)}


def heartbeat(session: Session, attempt: Attempt) -> bool:
    """Refresh ``heartbeat_at``; False when the lease is lost. Commits."""
    return report_beats(session, [Beat(attempt)])[0]


def report_progress(session: Session, attempt: Attempt, progress: dict[str, Any]) -> bool:
    """Store the progress (also a heartbeat) and add a ``progress`` event. Commits."""
    return report_beats(session, [Beat(attempt, progress)])[0]


def record_epoch(
    session: Session, attempt: Attempt, phase: str, epoch: int, metrics: dict[str, float]
) -> bool:
    """Write one epoch's metrics and its ``metrics`` event. Commits."""
    return record_epochs(session, [EpochMetrics(attempt, phase, epoch, metrics)])[0]


def cancel_requested(session: Session, job_id: str) -> bool:
    """True when the job should stop: cancel asked, or the job is gone."""
    return job_id in cancels_requested(session, [job_id])
