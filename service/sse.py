"""The Server-Sent Events stream of a job: its history from the database, then live events
from the process's :class:`~noisefa.service.event_hub.EventHub`.

The stream ends after the job's terminal state event; ``Last-Event-ID`` resumes after a
given event id. Open streams are capped per project and per process (429 past a cap), and a
stream gives its slot back when it ends or its client leaves.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from noisefa.engine.contract.states import TERMINAL_STATES

from .event_hub import Event, EventHub, Listener
from .problems import ProblemError
from .repositories.events import events_after, job_states

RETRY_MS = 1000
KEEPALIVE_S = 15.0
REPLAY_PAGE = 500
RETRY_AFTER_S = 5
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def format_event(event_id: int, event_type: str, data: Any) -> str:
    """One SSE message (``data`` is single-line JSON)."""
    return f"id: {event_id}\nevent: {event_type}\ndata: {json.dumps(data)}\n\n"


class StreamSlot:
    """One open stream counted against its caps; :meth:`release` gives it back, once."""

    def __init__(self, slots: StreamSlots, project_id: str) -> None:
        self._slots = slots
        self._project_id = project_id
        self._released = False

    def release(self) -> None:
        """Give the slot back (later calls do nothing)."""
        if not self._released:
            self._released = True
            self._slots._give_back(self._project_id)


class StreamSlots:
    """The open streams of this API process, per project, under ``max_streams_per_project``
    and ``max_streams_per_process``. Taken on a worker thread (with the history), given
    back on the event loop, hence the lock."""

    def __init__(self, per_project: int, per_process: int) -> None:
        self.per_project = per_project
        self.per_process = per_process
        self._open: Counter[str] = Counter()
        self._lock = threading.Lock()

    def take(self, project_id: str) -> StreamSlot:
        """A slot for one more stream of the project, or a 429 problem naming the cap."""
        with self._lock:
            total = self._open.total()
            if total >= self.per_process:
                raise _too_many(
                    f"max_streams_per_process: this API process has {total} open event "
                    f"streams (limit {self.per_process})"
                )
            if self._open[project_id] >= self.per_project:
                raise _too_many(
                    f"max_streams_per_project: this project has {self._open[project_id]} open "
                    f"event streams on this API process (limit {self.per_project})"
                )
            self._open[project_id] += 1
        return StreamSlot(self, project_id)

    def _give_back(self, project_id: str) -> None:
        with self._lock:
            self._open[project_id] -= 1
            if self._open[project_id] <= 0:
                del self._open[project_id]


def _too_many(detail: str) -> ProblemError:
    return ProblemError(
        429,
        f"{detail}; close a stream, retry later, or poll GET /v1/jobs/{{id}}",
        slug="too-many-streams",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def _replay(session: Session, job_id: str, after: int) -> tuple[list[Event], bool]:
    """The job's events after ``after`` and whether it was terminal (or gone) *before* they
    were read (so its terminal event, if any, is among them)."""
    state = job_states(session, [job_id]).get(job_id)
    events: list[Event] = []
    while True:
        rows = events_after(session, job_id, after, limit=REPLAY_PAGE)
        events += [Event(row.id, row.job_id, row.type, row.data) for row in rows]
        if len(rows) < REPLAY_PAGE:
            break
        after = rows[-1].id
    return events, state is None or state in TERMINAL_STATES


def _open(
    sessions: sessionmaker[Session],
    slots: StreamSlots,
    owner: Callable[[Session], str],
    job_id: str,
    after: int,
) -> tuple[StreamSlot, list[Event], bool]:
    """Check the caller may follow the job (``owner``: its project id, or a 401/404 problem),
    take a slot and read the history, all in one session on one thread.

    One hop on purpose: a request that held a connection while it waited for a thread to
    run its next step could, in a burst of new streams, leave every thread waiting for a
    connection held by a request waiting for a thread.
    """
    with sessions() as session:
        slot = slots.take(owner(session))
        try:
            history, terminal = _replay(session, job_id, after)
        except BaseException:
            slot.release()
            raise
    return slot, history, terminal


async def _live(listener: Listener, after: int) -> AsyncIterator[str]:
    """The listener's queued events above ``after`` until the terminal one, with keepalive
    comments while nothing comes."""
    while True:
        if listener.dropped:
            yield ": closed: this client fell too far behind; resume with Last-Event-ID\n\n"
            return
        try:
            async with asyncio.timeout(KEEPALIVE_S):
                event = await listener.queue.get()
        except TimeoutError:
            yield ": keepalive\n\n"
            continue
        if event is None:
            return
        if event.id <= after:
            continue  # already sent with the history
        yield format_event(event.id, event.type, event.data)
        after = event.id
        if event.ends_stream:
            return


async def _messages(
    hub: EventHub,
    listener: Listener,
    history: list[Event],
    terminal: bool,
    after: int,
    give_back: Callable[[], None],
) -> AsyncIterator[str]:
    """The stream's SSE messages: the history, then live events until the terminal one;
    ``give_back`` runs when it ends, however it ends."""
    try:
        yield f"retry: {RETRY_MS}\n\n"
        for event in history:
            yield format_event(event.id, event.type, event.data)
            after = event.id
            if event.ends_stream:
                return
        if terminal:
            return
        hub.follow(listener, after)
        async for message in _live(listener, after):
            yield message
    finally:
        give_back()


async def event_stream_response(
    hub: EventHub,
    slots: StreamSlots,
    sessions: sessionmaker[Session],
    owner: Callable[[Session], str],
    job_id: str,
    after: int,
) -> StreamingResponse:
    """The job's event stream after ``after``, or the problem ``owner`` or a cap raises.

    The stream subscribes to the hub *before* the history is read, so an event committed
    meanwhile is in the history or in its queue (never in neither); its listener and slot
    are given back when the stream ends or the client leaves.
    """
    listener = hub.subscribe(job_id)
    try:
        slot, history, terminal = await run_in_threadpool(
            _open, sessions, slots, owner, job_id, after
        )
    except BaseException:
        hub.unsubscribe(listener)
        raise

    def give_back() -> None:
        hub.unsubscribe(listener)
        slot.release()

    messages = _messages(hub, listener, history, terminal, after, give_back)

    async def close() -> None:
        # Runs after the response, a disconnect included, when the generator may be left
        # suspended or never started: give everything back now, not at garbage collection.
        await messages.aclose()
        give_back()

    return StreamingResponse(
        messages,
        media_type="text/event-stream",
        headers=STREAM_HEADERS,
        background=BackgroundTask(close),
    )
