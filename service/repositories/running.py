"""What a running attempt writes over and over: heartbeats, progress, epochs' metrics, and
its polls for a cancel; each write fenced by the attempt's lease (:func:`.execution.touch`).

A worker task writes these for every member of its pack at once (the members step, and end
their epochs, together), so each write takes many attempts and makes one transaction of
them: one commit, not one per member. Jobs are touched in id order, as
:func:`.claims.claim_jobs` locks them, so two such transactions never wait on each other's
rows in a cycle. The one-attempt forms are the same writes of one.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import Job, JobMetric
from .events import add_event
from .execution import Attempt, touch, upsert


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
    """Write every beat in one transaction; per beat whether its lease held. Commits."""
    return _write_each(session, beats, _beat)


def record_epochs(session: Session, epochs: Sequence[EpochMetrics]) -> list[bool]:
    """Write each epoch's metrics (a resumed epoch overwrites) and a ``metrics`` event in one
    transaction; per epoch whether its lease held. Commits."""
    return _write_each(session, epochs, _record_epoch)


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


def _write_each(session: Session, writes: Sequence[Any], write: Any) -> list[bool]:
    """``write(session, w)`` of each of ``writes`` in job-id order, then one commit."""
    held = [False] * len(writes)
    for index in sorted(range(len(writes)), key=lambda i: writes[i].attempt.job_id):
        held[index] = write(session, writes[index])
    session.commit()
    return held


def _beat(session: Session, beat: Beat) -> bool:
    if beat.progress is None:
        return touch(session, beat.attempt)
    ok = touch(session, beat.attempt, progress=beat.progress)
    if ok:
        add_event(session, beat.attempt.job_id, "progress", beat.progress)
    return ok


def _record_epoch(session: Session, record: EpochMetrics) -> bool:
    attempt = record.attempt
    ok = touch(session, attempt)
    if ok and record.metrics:
        rows = [
            {
                "job_id": attempt.job_id,
                "phase": record.phase,
                "name": name,
                "epoch": record.epoch,
                "value": value,
            }
            for name, value in record.metrics.items()
        ]
        upsert(session, JobMetric.__table__, rows, ["job_id", "phase", "name", "epoch"], ["value"])
    if ok:
        data = {"phase": record.phase, "epoch": record.epoch, "metrics": record.metrics}
        add_event(session, attempt.job_id, "metrics", data)
    return ok
