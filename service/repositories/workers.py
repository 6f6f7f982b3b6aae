"""The worker registry: each worker process keeps one row alive by heartbeating it.

A job's heartbeat says its attempt is alive; a worker's says somebody consumes its queues
even while no job runs. ``/readyz`` counts live workers per queue (heartbeat newer than
``heartbeat_timeout_s``), and the reaper deletes rows of workers long dead. A worker whose
row was deleted while it was cut off (a long database outage) registers again under the
same id.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from ..models import Worker, utcnow


def register_worker(
    session: Session,
    worker_id: str,
    *,
    hostname: str,
    pid: int,
    queues: Iterable[str],
    datasets: Iterable[str],
) -> None:
    """Insert (or refresh) the row of worker ``worker_id``, heartbeating it now. Commits."""
    now = utcnow()
    row = session.get(Worker, worker_id)
    if row is None:
        row = Worker(id=worker_id, started_at=now)
        session.add(row)
    row.hostname = hostname
    row.pid = pid
    row.queues = sorted(set(queues))
    row.datasets = sorted(set(datasets))
    row.heartbeat_at = now
    session.commit()


def heartbeat_worker(session: Session, worker_id: str) -> bool:
    """Refresh the worker's ``heartbeat_at``; False when its row is gone. Commits."""
    result = session.execute(
        update(Worker)
        .where(Worker.id == worker_id)
        .values(heartbeat_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    return result.rowcount == 1


def deregister_worker(session: Session, worker_id: str) -> None:
    """Delete the worker's row (a clean shutdown). Commits."""
    session.execute(delete(Worker).where(Worker.id == worker_id))
    session.commit()


def live_workers(session: Session, heartbeat_timeout_s: float) -> list[Worker]:
    """Workers whose heartbeat is newer than the timeout, oldest first."""
    cutoff = utcnow() - timedelta(seconds=heartbeat_timeout_s)
    rows = session.scalars(
        select(Worker).where(Worker.heartbeat_at >= cutoff).order_by(Worker.started_at)
    ).all()
    session.commit()
    return list(rows)


def live_workers_per_queue(
    session: Session, heartbeat_timeout_s: float, queues: Iterable[str]
) -> dict[str, int]:
    """How many live workers consume each of ``queues`` (0 for a queue nobody consumes)."""
    counts = dict.fromkeys(queues, 0)
    for worker in live_workers(session, heartbeat_timeout_s):
        for queue in worker.queues:
            counts[queue] = counts.get(queue, 0) + 1
    return counts


def prune_dead_workers(session: Session, dead_for_s: float) -> int:
    """Delete workers whose last heartbeat is older than ``dead_for_s``; how many. Commits."""
    cutoff = utcnow() - timedelta(seconds=dead_for_s)
    result = session.execute(delete(Worker).where(Worker.heartbeat_at < cutoff))
    session.commit()
    return result.rowcount


def datasets_held_on_queue(
    session: Session, heartbeat_timeout_s: float, queue: str
) -> set[str] | None:
    """Built-in datasets some live worker consuming ``queue`` holds; None when no live worker
    consumes it. Does not commit: submission asks inside the transaction that stores the job
    (whose idempotency lock lasts until that commit)."""
    cutoff = utcnow() - timedelta(seconds=heartbeat_timeout_s)
    rows = session.execute(
        select(Worker.queues, Worker.datasets).where(Worker.heartbeat_at >= cutoff)
    ).all()
    held = [set(datasets) for queues, datasets in rows if queue in queues]
    return set().union(*held) if held else None
