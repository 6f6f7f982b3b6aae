"""The reaper: a periodic sweep so that no job stays ``running`` forever and none is lost.

Each sweep, under one database-wide lock so replicas take turns:

1. jobs whose heartbeat is older than ``heartbeat_timeout_s`` (their worker died) are
   re-queued to resume from their last checkpoint as a new attempt, or failed
   ``worker_lost`` once ``max_attempts`` are spent (:func:`reap_stale`); an experiment's runs
   re-queued together are sent as packs (:mod:`.packs`), so a killed pack comes back as one;
2. jobs queued for longer than ``requeue_after_s`` are sent to the broker again, since their
   message may be gone (the API commits before it enqueues; Redis may restart empty) — only
   those that no message waiting on their queue names (:mod:`.broker_peek` reads the
   waiting bodies, "run pack" ones carry several ids), so a backlog is never re-sent and a
   single lost pack among many is still noticed. Comparing counts would not do: a pack's
   message carries many jobs (fewer messages than queued jobs with none lost), and a lower
   bound on the messages needed (one per experiment) misses a lost pack of an experiment
   that has others waiting. Where the bodies cannot be read (the broker is down, another
   transport) every stale queued job of the queue is re-sent: a duplicate is harmless, the
   database lets one attempt start. A message a worker holds is not waiting, but its job
   leaves ``queued`` as soon as that worker starts it;
3. expired ``Idempotency-Key`` records are deleted;
4. experiments whose runs have all ended but which were not aggregated within
   ``experiment_sweep_after_s`` (the "aggregate" message was lost, or its worker died) are
   sent to aggregate again;
5. workers silent for ``dead_worker_retention_s`` are deleted from the worker registry;
6. progress events older than ``progress_event_retention_s`` are deleted, but each job's
   latest (:func:`_prune_progress`).

Every state change is a conditional UPDATE, so a sweep that races another one (or a worker)
moves each job once; the lock only saves duplicate work. Messages are sent after the commit:
one that fails to send leaves the job ``queued``, and step 2 sends it again later. Should
planning the packs fail, each job is sent on its own rather than not at all.

The API process runs :class:`Reaper` as a daemon thread (``reaper_enabled``), every
``reaper_interval_s``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from celery import Celery
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from noisefa.engine.contract.states import JobState

from .broker import enqueue_finish_experiment
from .broker_peek import waiting_job_ids
from .models import utcnow
from .packs import plan_packs_or_singles, send_each
from .periodic import PeriodicLoop
from .repositories import events as event_repo
from .repositories.experiments import stalled_experiments
from .repositories.jobs import delete_expired_idempotency_keys
from .repositories.reaping import queued_counts, reap_stale, stale_queued_jobs
from .repositories.workers import prune_dead_workers
from .settings import Settings

log = logging.getLogger(__name__)

# pg_try_advisory_xact_lock key of the sweep: "noisefa reaper" as a 63-bit number.
REAPER_LOCK_KEY = 0x6E6F69736566_6172


@dataclass
class Sweep:
    """What one sweep did (``ran`` is False when another replica held the lock)."""

    ran: bool = True
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    expired_keys: int = 0
    aggregations: list[str] = field(default_factory=list)
    pruned_workers: int = 0
    pruned_progress: int = 0


# How far back of its last cutoff a sweep's progress prune looks again: a worker whose clock
# runs behind the API's stamps events a little in the past.
PRUNE_OVERLAP_S = 60.0
# How often a replica's progress prune looks at every progress event again, for those that
# were a job's latest when they aged, and were superseded only after a longer pause.
FULL_PRUNE_EVERY_S = 3600.0


@dataclass
class SweepMemory:
    """What a replica's sweeps carry from one to the next: how far the progress prune got
    (its last cutoff, None before the first) and when it last looked at everything."""

    progress_cutoff: datetime | None = None
    full_prune_at: float = float("-inf")  # time.monotonic()

    def progress_since(self, now: float) -> datetime | None:
        """Where this sweep's progress prune starts looking (None: everywhere)."""
        if self.progress_cutoff is None or now - self.full_prune_at >= FULL_PRUNE_EVERY_S:
            return None
        return self.progress_cutoff - timedelta(seconds=PRUNE_OVERLAP_S)


def _take_lock(session: Session) -> bool:
    """Postgres: the sweep's transaction-scoped advisory lock (False when another holds it).

    SQLite serves one API process (the embedded mode), so there is nobody to take turns with.
    """
    if session.get_bind().dialect.name != "postgresql":
        return True
    locked = session.scalar(
        text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": REAPER_LOCK_KEY}
    )
    return bool(locked)


def _waiting_job_ids(session: Session, celery: Celery) -> dict[str, set[str] | None]:
    """Per queue with queued jobs, the job ids its waiting messages name (None: unknown)."""
    return {queue: waiting_job_ids(celery, queue) for queue in queued_counts(session)}


def sweep(
    sessions: sessionmaker[Session],
    celery: Celery,
    settings: Settings,
    memory: SweepMemory | None = None,
) -> Sweep:
    """Run one sweep now; see the module docstring for its steps. Without ``memory`` (a
    one-off sweep) the progress prune looks at every progress event."""
    memory = memory if memory is not None else SweepMemory()
    done = Sweep()
    to_send: list[tuple[str, str]] = []
    stalled: list[tuple[str, str]] = []
    with sessions() as session:
        if not _take_lock(session):
            return Sweep(ran=False)
        for reaped in reap_stale(session, settings.heartbeat_timeout_s):  # commits: lock ends
            if reaped.state == JobState.QUEUED:
                done.requeued.append(reaped.job_id)
                to_send.append((reaped.job_id, reaped.queue))
            elif reaped.state == JobState.FAILED:
                done.failed.append(reaped.job_id)
            else:
                done.cancelled.append(reaped.job_id)
        if _take_lock(session):
            waiting = _waiting_job_ids(session, celery)
            if waiting:
                waiting_ids = set().union(*(ids for ids in waiting.values() if ids))
                resent = stale_queued_jobs(  # commits
                    session, settings.requeue_after_s, list(waiting), exclude=waiting_ids
                )
                done.resent = [job_id for job_id, _ in resent]
                to_send += resent
        if _take_lock(session):
            done.expired_keys = delete_expired_idempotency_keys(session, settings.idempotency_ttl_s)
        if _take_lock(session):
            stalled = stalled_experiments(session, settings.experiment_sweep_after_s)  # commits
            done.aggregations = [job_id for job_id, _ in stalled]
        if _take_lock(session):
            done.pruned_workers = prune_dead_workers(session, settings.dead_worker_retention_s)
        done.pruned_progress = _prune_progress(session, settings, memory)
        # An experiment's runs go back as packs: a dead pack's members resume as one stack.
        packs = plan_packs_or_singles(session, settings, to_send, "reaper")
    send_each(celery, packs, "reaper")
    for job_id, queue in stalled:
        try:
            enqueue_finish_experiment(celery, job_id, queue)
        except Exception:
            log.warning("reaper: could not send aggregation of %s", job_id, exc_info=True)
        else:
            log.info("reaper: experiment %s had all runs ended; aggregation re-sent", job_id)
    if done.requeued or done.failed or done.cancelled or done.resent:
        log.info(
            "reaper: requeued %s, failed worker_lost %s, cancelled %s, re-sent %s",
            done.requeued,
            done.failed,
            done.cancelled,
            done.resent,
        )
    return done


def _prune_progress(session: Session, settings: Settings, memory: SweepMemory) -> int:
    """Step 6, in batches while this replica holds the lock; how many events went.

    Each job's latest progress event stays older than the cutoff for good, so a prune that
    looked at every event each sweep would find all of those again: it looks only at what
    aged since its last cutoff, and at everything once every ``FULL_PRUNE_EVERY_S``. The
    memory moves on only once a prune is complete. A failure is logged (the next sweep
    tries again), so the sweep's messages still go.
    """
    now = time.monotonic()
    cutoff = utcnow() - timedelta(seconds=settings.progress_event_retention_s)
    since = memory.progress_since(now)
    total = 0
    try:
        while _take_lock(session):
            deleted = event_repo.prune_superseded_progress(session, cutoff, since)
            total += deleted
            if deleted < event_repo.PRUNE_BATCH:  # the module's: a test makes batches small
                memory.progress_cutoff = cutoff
                if since is None:
                    memory.full_prune_at = now
                break
    except Exception:
        session.rollback()
        log.warning("reaper: pruning progress events failed; the next sweep retries", exc_info=True)
    return total


class Reaper(PeriodicLoop):
    """:func:`sweep` every ``reaper_interval_s`` on a daemon thread, until :meth:`stop` (the
    first sweep runs at once: jobs orphaned while the API was down)."""

    def __init__(self, sessions: sessionmaker[Session], celery: Celery, settings: Settings) -> None:
        memory = SweepMemory()
        super().__init__(
            "reaper", lambda: sweep(sessions, celery, settings, memory), settings.reaper_interval_s
        )
