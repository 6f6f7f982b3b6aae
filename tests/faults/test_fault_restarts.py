"""Restart the API, Redis and PostgreSQL while jobs run: every job still ends (succeeded, or
failed with a machine-readable reason and a message), none stays ``running`` past the
reaper's deadline, none loses or duplicates metric points, and the API's view is right.

The Redis and Postgres restarts are real server restarts: they disturb any other client of
these servers for a second or two.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from noisefa.engine.contract.states import TERMINAL_STATES, FailureReason
from noisefa.service.models import Artifact
from noisefa.testing.faults import HEARTBEAT_TIMEOUT_S, REQUEUE_AFTER_S
from noisefa.testing.services import restart_postgres, restart_redis
from noisefa.testing.specs import cpu_pretrain_spec as pretrain_spec

# Room for the jobs themselves, the reaper's timeout and a re-send of lost messages.
DEADLINE_S = 180.0 + HEARTBEAT_TIMEOUT_S + REQUEUE_AFTER_S
# Long enough (~2 s an epoch on one thread here) that a restart after its first checkpoint
# always lands while it still runs.
LONG = pretrain_spec(epochs=6, samples=300_000, hidden=32, seed=1)
SHORT = pretrain_spec(epochs=1, samples=256, seed=2)


@pytest.fixture(scope="module", autouse=True)
def one_worker(stack):
    """One worker (the faults here hit the services, not the worker)."""
    return stack.use_workers(1)


def ended_well(stack, job_ids: list[str]) -> dict:
    """Wait for every job to end; check each ended clearly and its metrics are single."""
    jobs = stack.wait_terminal(job_ids, DEADLINE_S)
    for job in jobs.values():
        assert job.state in TERMINAL_STATES
        if job.state == "failed":
            assert job.error_reason in set(FailureReason) and job.error_message, job.id
        assert job.attempt <= job.max_attempts
    assert stack.duplicated_metric_points(job_ids) == 0
    return jobs


def running_with_checkpoint(stack, job_id: str) -> bool:
    job = stack.job(job_id)
    assert job.state in ("queued", "running"), f"{job_id} ended early: {job.state}"
    if job.state != "running":
        return False
    with stack.sessions() as session:
        names = session.scalars(select(Artifact.name).where(Artifact.job_id == job_id)).all()
    return any(name.startswith("checkpoints/") for name in names)


def test_api_restart_while_jobs_run_keeps_states_and_progress_right(stack):
    ids = [stack.submit(LONG), stack.submit(SHORT)]
    stack.wait_for(lambda: stack.job(ids[0]).state == "running", DEADLINE_S, "the long job to run")
    stack.stop_api()
    # The worker goes on without the API: progress keeps landing in the database.
    stack.wait_for(lambda: (stack.job(ids[0]).progress or {}).get("step"), DEADLINE_S, "progress")
    stack.start_api()
    with stack.http() as http:
        for job_id in ids:
            seen = http.get(f"/v1/jobs/{job_id}").json()
            row = stack.job(job_id)
            assert seen["state"] in (row.state, "succeeded"), (seen, row.state)
            if seen["state"] == "running" and job_id == ids[0]:  # it had reported a step
                assert seen["progress"]["phase"] == "pretrain" and seen["progress"]["step"]
    jobs = ended_well(stack, ids)
    assert [jobs[job_id].state for job_id in ids] == ["succeeded", "succeeded"]
    assert [jobs[job_id].attempt for job_id in ids] == [1, 1]  # no one reaped a live job
    with stack.http() as http:
        for job_id in ids:
            seen = http.get(f"/v1/jobs/{job_id}").json()
            assert seen["state"] == "succeeded" and seen["result"]["final_metrics"]


def test_redis_restart_loses_queued_messages_and_every_job_still_ends(stack):
    ids = [stack.submit(LONG), stack.submit(SHORT), stack.submit(SHORT)]
    stack.wait_for(lambda: running_with_checkpoint(stack, ids[0]), DEADLINE_S, "a checkpoint")
    restart_redis()  # the two queued messages are gone
    jobs = ended_well(stack, ids)
    assert all(job.state == "succeeded" for job in jobs.values()), stack.log_tail()


def test_postgres_restart_mid_job_and_every_job_still_ends(stack):
    ids = [stack.submit(LONG), stack.submit(SHORT)]
    stack.wait_for(lambda: running_with_checkpoint(stack, ids[0]), DEADLINE_S, "a checkpoint")
    restart_postgres()
    jobs = ended_well(stack, ids)
    # The worker rides out the outage (its writes retry); a longer outage makes the reaper
    # resume the job as a new attempt. Either way it completes.
    assert [jobs[job_id].state for job_id in ids] == ["succeeded", "succeeded"], stack.log_tail()
    with stack.http() as http:
        assert http.get("/readyz").status_code == 200
