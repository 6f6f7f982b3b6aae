"""Webhook rows: each project's signing secret, and the delivery outbox.

The outbox is filled from ``job_events``: every state change already writes a ``state``
event in the transaction that makes it, so a sweep that turns recent state events of jobs
with a ``notify`` block into ``webhook_deliveries`` rows loses none, whoever wrote it (API,
worker, reaper) and whatever crashed after. One row per event (unique ``event_id``).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..models import Job, JobEvent, WebhookDelivery, WebhookSecret, utcnow

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
# State events older than this are not turned into deliveries (a bound on each sweep).
LOOKBACK = timedelta(hours=1)
# A claimed delivery is not claimed again for this long (one dispatcher at a time).
CLAIM = timedelta(seconds=60)
TERMINAL_EVENTS = ("succeeded", "failed", "cancelled")


def project_secret(session: Session, project_id: str) -> str:
    """The project's signing secret, made (and committed) on first use."""
    row = session.get(WebhookSecret, project_id)
    if row is not None:
        return row.secret
    session.add(WebhookSecret(project_id=project_id, secret=secrets.token_hex(32)))
    try:
        session.commit()
    except IntegrityError:  # made at the same moment by another request
        session.rollback()
    row = session.get(WebhookSecret, project_id)
    assert row is not None
    return row.secret


def wanted(events: list[str], state: str) -> str | None:
    """The event name a ``state`` change is delivered as, or None when not subscribed."""
    if state in TERMINAL_EVENTS and state in events:
        return state
    return "state" if "state" in events else None


def queue_new_deliveries(session: Session, now: datetime | None = None) -> int:
    """Turn recent state events of jobs with ``notify`` into pending deliveries; how many."""
    now = now or utcnow()
    delivered = select(WebhookDelivery.event_id)
    rows = session.execute(
        select(JobEvent, Job.project_id, Job.spec)
        .join(Job, Job.id == JobEvent.job_id)
        .where(
            JobEvent.type == "state",
            JobEvent.created_at >= now - LOOKBACK,
            JobEvent.id.not_in(delivered),
        )
        .order_by(JobEvent.id)
        .limit(500)
    ).all()
    queued = 0
    for event, project_id, spec in rows:
        notify = (spec or {}).get("notify")
        if not notify:
            continue
        name = wanted(notify.get("events", ["state"]), event.data.get("state", ""))
        if name is None:
            continue
        payload = {
            "event": name,
            "job_id": event.job_id,
            "project_id": project_id,
            "event_id": event.id,
            "at": event.created_at.isoformat(),
            **event.data,
        }
        session.add(
            WebhookDelivery(
                job_id=event.job_id,
                event_id=event.id,
                event=name,
                url=notify["url"],
                payload=payload,
                status=PENDING,
                next_attempt_at=now,
            )
        )
        try:
            session.commit()
            queued += 1
        except IntegrityError:  # another replica queued it first
            session.rollback()
    return queued


def claim_due(session: Session, limit: int = 20) -> list[WebhookDelivery]:
    """Pending deliveries due now, each claimed for ``CLAIM`` (a compare-and-set on
    ``next_attempt_at``, so two replicas never send one at once)."""
    now = utcnow()
    due = session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.id)
        .limit(limit)
    ).all()
    claimed = []
    for row in due:
        result = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == row.id,
                WebhookDelivery.next_attempt_at == row.next_attempt_at,
                WebhookDelivery.status == PENDING,
            )
            .values(next_attempt_at=now + CLAIM)
        )
        session.commit()
        if result.rowcount == 1:
            session.refresh(row)
            claimed.append(row)
    return claimed


def record_attempt(
    session: Session,
    delivery_id: int,
    *,
    ok: bool,
    status_code: int | None,
    error: str | None,
    retry_in: timedelta | None,
) -> None:
    """Record one try: delivered, or retried after ``retry_in``, or failed (None)."""
    now = utcnow()
    values: dict[str, Any] = {
        "attempts": WebhookDelivery.attempts + 1,
        "last_status_code": status_code,
        "last_error": error,
    }
    if ok:
        values.update(status=DELIVERED, delivered_at=now)
    elif retry_in is None:
        values.update(status=FAILED)
    else:
        values.update(next_attempt_at=now + retry_in)
    session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(values))
    session.commit()


def deliveries_of(session: Session, job_id: str) -> list[WebhookDelivery]:
    """The job's deliveries, oldest first."""
    return list(
        session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.job_id == job_id)
            .order_by(WebhookDelivery.id)
        )
    )
