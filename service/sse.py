"""The Server-Sent Events stream of a job, fed by polling the ``job_events`` table.

Polling the database (not the broker) keeps one source of truth and works the same with
any number of API replicas. The stream ends after the job's terminal state event was sent;
``Last-Event-ID`` resumes after a given event id.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from noisefa.engine.contract.states import TERMINAL_STATES

from .models import Job
from .repositories.events import events_after

POLL_S = 0.25
KEEPALIVE_S = 15.0


def format_event(event_id: int, event_type: str, data: Any) -> str:
    """One SSE message (``data`` is single-line JSON)."""
    return f"id: {event_id}\nevent: {event_type}\ndata: {json.dumps(data)}\n\n"


def _poll(make_session: sessionmaker[Session], job_id: str, after: int) -> tuple[list, bool]:
    """New events after ``after`` and whether the job was terminal *before* they were read.

    The state is read first: if it was terminal, its terminal event is already committed and
    will be among the events read next, so ending the stream never drops it.
    """
    with make_session() as session:
        state = session.scalar(select(Job.state).where(Job.id == job_id))
        rows = events_after(session, job_id, after)
        events = [(row.id, row.type, row.data) for row in rows]
    return events, state is None or state in TERMINAL_STATES


async def stream_job_events(
    make_session: sessionmaker[Session], job_id: str, after: int, request: Request
) -> AsyncIterator[str]:
    """Yield SSE messages until the terminal state event (or the client leaves)."""
    last_write = time.monotonic()
    yield "retry: 1000\n\n"
    while True:
        events, terminal = await run_in_threadpool(_poll, make_session, job_id, after)
        for event_id, event_type, data in events:
            yield format_event(event_id, event_type, data)
            after = event_id
            last_write = time.monotonic()
            if event_type == "state" and data.get("state") in TERMINAL_STATES:
                return
        if terminal and not events:
            return
        if await request.is_disconnected():
            return
        if time.monotonic() - last_write > KEEPALIVE_S:
            yield ": keepalive\n\n"
            last_write = time.monotonic()
        if not events:
            await asyncio.sleep(POLL_S)
