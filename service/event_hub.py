"""The event hub: one poller per API process that feeds every open event stream.

A waiting stream holds neither a database connection nor a thread: it owns a bounded queue,
and the hub fills the queues of all streams from one read per tick (the new events of every
watched job, and those jobs' states). The database stays the only source of truth, so each
API replica runs its own hub and every replica sees the same events.

A new stream subscribes *before* it replays the job's history, so an event committed while
the history is read reaches it either in the history or through its queue; it skips queued
events it has already sent, by id. A consumer that falls a whole queue behind is dropped
(its stream ends and the client resumes with ``Last-Event-ID``) instead of growing memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from noisefa.engine.contract.states import TERMINAL_STATES

from .repositories.events import events_of_jobs_after, job_states

logger = logging.getLogger(__name__)

POLL_S = 0.25
QUEUE_EVENTS = 1000  # per stream: a client this far behind is dropped
TICK_EVENTS = 5000  # most events one tick reads; a full read is followed at once by the next


@dataclass(frozen=True)
class Event:
    """One ``job_events`` row, detached from its session."""

    id: int
    job_id: str
    type: str
    data: dict[str, Any]

    @property
    def ends_stream(self) -> bool:
        """True for the job's terminal state event: the last one its stream sends."""
        return self.type == "state" and self.data.get("state") in TERMINAL_STATES


@dataclass(frozen=True)
class Tick:
    """What one poll read: new events, the watched jobs' states, and whether it read all."""

    events: list[Event]
    states: dict[str, str]
    complete: bool


def read_tick(sessions: sessionmaker[Session], cursors: Mapping[str, int], limit: int) -> Tick:
    """New events of the jobs in ``cursors`` and their states, in one short session.

    The states are read first: a job already terminal then has its terminal event among the
    events read next, so "terminal and nothing new" means its stream has nothing left to send.
    """
    with sessions() as session:
        states = job_states(session, cursors.keys())
        rows = events_of_jobs_after(session, cursors, limit)
        events = [Event(row.id, row.job_id, row.type, row.data) for row in rows]
    return Tick(events, states, complete=len(events) < limit)


class Listener:
    """One stream's place in the hub: a bounded queue of events (``None``: the job ended with
    nothing more to send) and whether the hub dropped it for falling behind."""

    def __init__(self, job_id: str, queue_events: int) -> None:
        self.job_id = job_id
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(queue_events)
        self.dropped = False

    def offer(self, item: Event | None) -> bool:
        """Queue ``item``; on a full queue mark the listener dropped and answer False."""
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.dropped = True
            return False
        return True


class EventHub:
    """Subscriptions of this process's streams and the task that polls for them.

    Everything but the database read runs on the event loop, so the registries need no lock.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        poll_s: float = POLL_S,
        queue_events: int = QUEUE_EVENTS,
        tick_events: int = TICK_EVENTS,
    ) -> None:
        self._sessions = sessions
        self._poll_s = poll_s
        self._queue_events = queue_events
        self._tick_events = tick_events
        self._listeners: dict[str, set[Listener]] = {}
        self._cursors: dict[str, int] = {}  # job id → highest event id read for its listeners
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start polling on the running event loop (the app's lifespan calls this)."""
        assert self._task is None, "the event hub is already running"
        self._task = asyncio.get_running_loop().create_task(self._run(), name="event-hub")

    async def stop(self) -> None:
        """Stop polling; open streams get nothing more."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def subscribe(self, job_id: str) -> Listener:
        """A listener of the job's events, queued from now on; call :meth:`follow` once the
        stream has replayed the history, so the hub knows where to read from."""
        assert self._task is not None, "the event hub is not running: serve the app with lifespan"
        listener = Listener(job_id, self._queue_events)
        self._listeners.setdefault(job_id, set()).add(listener)
        return listener

    def follow(self, listener: Listener, cursor: int) -> None:
        """Poll the listener's job for events above ``cursor`` (the last one its stream sent),
        unless the job is polled already (from an older cursor, whose events the listener
        skips) or the listener has left."""
        if listener in self._listeners.get(listener.job_id, ()):
            self._cursors.setdefault(listener.job_id, cursor)

    def unsubscribe(self, listener: Listener) -> None:
        """Forget the listener (idempotent); a job without listeners is no longer polled."""
        listeners = self._listeners.get(listener.job_id)
        if listeners is None:
            return
        listeners.discard(listener)
        if not listeners:
            del self._listeners[listener.job_id]
            self._cursors.pop(listener.job_id, None)

    async def _run(self) -> None:
        """Poll every ``poll_s`` while some job is followed; survive database outages."""
        failing = False
        while True:
            complete = True
            if self._cursors:
                cursors = dict(self._cursors)
                try:
                    tick = await run_in_threadpool(
                        read_tick, self._sessions, cursors, self._tick_events
                    )
                except SQLAlchemyError:
                    if not failing:
                        logger.exception("event hub: reading new events failed; retrying")
                    failing = True
                else:
                    if failing:
                        logger.info("event hub: reading new events works again")
                    failing = False
                    self._fan_out(cursors, tick)
                    complete = tick.complete
            if complete:
                await asyncio.sleep(self._poll_s)

    def _fan_out(self, cursors: Mapping[str, int], tick: Tick) -> None:
        """Queue the tick's events to their jobs' listeners; end the streams of jobs that are
        terminal (or gone) with nothing new."""
        fresh = set()
        for event in tick.events:
            fresh.add(event.job_id)
            if event.job_id in self._cursors:
                self._cursors[event.job_id] = max(self._cursors[event.job_id], event.id)
            for listener in list(self._listeners.get(event.job_id, ())):
                self._offer(listener, event)
        if not tick.complete:
            return  # a job with nothing in a partial read may still have events waiting
        for job_id in cursors.keys() - fresh:
            state = tick.states.get(job_id)
            if state is None or state in TERMINAL_STATES:
                for listener in list(self._listeners.get(job_id, ())):
                    self._offer(listener, None)
                    self.unsubscribe(listener)

    def _offer(self, listener: Listener, item: Event | None) -> None:
        if not listener.offer(item):
            logger.warning(
                "event stream of job %s dropped: its client fell %d events behind",
                listener.job_id,
                self._queue_events,
            )
            self.unsubscribe(listener)
