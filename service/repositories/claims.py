"""Claiming jobs for a periodic loop: each job that matches is moved by a conditional UPDATE
that applies only while it still matches, so loops of several API replicas racing each other
claim every job once (no lock needed for correctness)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import ColumnElement, select, update
from sqlalchemy.orm import Session

from ..models import Job


def claim_jobs(
    session: Session,
    due: Sequence[ColumnElement[bool]],
    values: Mapping[str, Any],
    *,
    skip: Collection[str] = (),
    oldest_first: bool = False,
) -> list[tuple[str, str]]:
    """``(job_id, queue)`` of the jobs matching every condition of ``due`` (but those in
    ``skip``), each set to ``values`` by this call and by no racing one; in id order, or
    by submission with ``oldest_first``. Commits.

    Rows are claimed in id order whatever the order returned: two loops claiming some of the
    same rows in one transaction each lock them in one order, so neither waits on the other
    in a cycle (a Postgres deadlock)."""
    query = select(Job.id, Job.queue, Job.created_at).where(*due).order_by(Job.id)
    claimed = []
    for job_id, queue, created_at in session.execute(query).all():
        if job_id in skip:
            continue
        touched = session.execute(
            update(Job)
            .where(Job.id == job_id, *due)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        if touched.rowcount == 1:
            claimed.append((created_at, job_id, queue))
    session.commit()
    if oldest_first:
        claimed.sort()
    return [(job_id, queue) for _, job_id, queue in claimed]
