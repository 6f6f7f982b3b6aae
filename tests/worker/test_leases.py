"""A running job heartbeats through long epochs, and an attempt whose lease was taken over
stops and writes nothing more (the fencing the reaper relies on)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, select, update

from noisefa.client import Client
from noisefa.service.models import Job
from noisefa.testing.specs import SMALL_METRICS, cpu_pretrain_spec
from noisefa.testing.waiting import wait_for

JOB_TIMEOUT_S = 120.0
# One epoch of 5M noise samples takes far longer than these tests: heartbeats must come
# from the monitor thread, not from epoch ends.
LONG_PRETRAIN = cpu_pretrain_spec(epochs=2, samples=5_000_000, hidden=16, metrics=SMALL_METRICS)


@pytest.fixture(scope="module")
def db(stack) -> Iterator[Engine]:
    engine = create_engine(stack.env["NOISEFA_DATABASE_URL"])
    yield engine
    engine.dispose()


def job_row(db: Engine, job_id: str) -> Any:
    with db.connect() as conn:
        return conn.execute(select(Job).where(Job.id == job_id)).one()


def wait_row(db: Engine, job_id: str, ready, what: str) -> Any:
    return wait_for(
        lambda: ready(row := job_row(db, job_id)) and row,
        JOB_TIMEOUT_S,
        lambda: f"{what} (the job is {job_row(db, job_id).state})",
        poll_s=0.1,
    )


def heartbeat(row: Any) -> datetime:
    return row.heartbeat_at


def test_long_epoch_keeps_heartbeating(client: Client, db: Engine):
    job = client.submit(LONG_PRETRAIN)
    try:
        first = wait_row(db, job["id"], lambda r: r.state == "running", "the job to start")
        # heartbeat_interval_s is 1 in this stack: a few must arrive within the first epoch.
        later = wait_row(
            db,
            job["id"],
            lambda r: (heartbeat(r) - heartbeat(first)).total_seconds() >= 2,
            "heartbeats",
        )
        assert later.state == "running"
        assert (later.progress or {}).get("epoch") == 1, "the first epoch should still be running"
    finally:
        client.cancel(job["id"])
        assert client.wait(job["id"], timeout=JOB_TIMEOUT_S)["state"] == "cancelled"


def test_attempt_that_lost_its_lease_stops_and_writes_nothing(client: Client, db: Engine, stack):
    job = client.submit(LONG_PRETRAIN)
    wait_row(db, job["id"], lambda r: r.state == "running" and r.progress, "progress")
    # What the reaper does when it hands the job to a new attempt: a new lease token.
    with db.begin() as conn:
        conn.execute(update(Job).where(Job.id == job["id"]).values(lease_token="taken-over"))
    # Every later write of the old attempt is fenced out, so this is the row's final content.
    taken_over = job_row(db, job["id"])
    artifacts = client.artifacts(job["id"])
    wait_for(
        lambda: f"job {job['id']}: attempt 1 lost its lease" in stack.log_tail(chars=10**7),
        JOB_TIMEOUT_S,
        "the worker to notice its lease was lost",
        poll_s=0.1,
    )

    # The worker is free again (its next job runs) and never wrote to the taken-over job.
    short = {**LONG_PRETRAIN["pretrain"], "epochs": 1, "samples_per_epoch": 512}
    quick = client.submit({**LONG_PRETRAIN, "pretrain": short})
    assert client.wait(quick["id"], timeout=JOB_TIMEOUT_S)["state"] == "succeeded"
    after = job_row(db, job["id"])
    assert (after.state, after.lease_token, after.finished_at) == ("running", "taken-over", None)
    assert (after.heartbeat_at, after.progress) == (taken_over.heartbeat_at, taken_over.progress)
    assert client.artifacts(job["id"]) == artifacts  # nor was its stop-checkpoint uploaded
    # Leave no job "running" behind for the rest of the module.
    with db.begin() as conn:
        conn.execute(update(Job).where(Job.id == job["id"]).values(state="cancelled"))
