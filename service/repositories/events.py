"""Job events: the rows the SSE stream replays (state changes, progress, per-epoch metrics)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..models import JobEvent

EVENT_TYPES = ("state", "progress", "metrics")


def add_event(session: Session, job_id: str, type_: str, data: dict[str, Any]) -> None:
    """Stage one event in the caller's transaction (it commits with the change it reports)."""
    assert type_ in EVENT_TYPES, f"event type must be one of {EVENT_TYPES}, got {type_!r}"
    session.add(JobEvent(job_id=job_id, type=type_, data=data))


def state_event_data(
    state: str, attempt: int, reason: str | None = None, message: str | None = None
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
