"""Cancel while queued, while running, and again: always ends ``cancelled``, idempotently,
through the real worker."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from noisefa.service.models import Artifact
from noisefa.testing.specs import cpu_pretrain_spec as pretrain_spec
from noisefa.testing.threads import run_threads

DEADLINE_S = 180.0
# Long enough to be cancelled mid-way: it never ends on its own within the test.
ENDLESS = pretrain_spec(epochs=50, samples=4096, hidden=16, seed=3)
SHORT = pretrain_spec(epochs=1, samples=128, seed=4)


@pytest.fixture(scope="module", autouse=True)
def one_worker(stack):
    """A single worker: once it is busy, the next job stays queued."""
    return stack.use_workers(1)


def cancel(stack, job_id: str) -> dict:
    with stack.http() as http:
        response = http.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200, response.text
    return response.json()


def wait_training(stack, job_id: str) -> None:
    stack.wait_for(
        lambda: (stack.job(job_id).progress or {}).get("step"), DEADLINE_S, f"{job_id} to train"
    )


def test_cancel_while_queued_is_immediate_and_the_job_never_starts(stack):
    busy = stack.submit(ENDLESS)
    wait_training(stack, busy)  # the only worker is taken: the next job stays queued
    queued = stack.submit(SHORT)
    assert stack.job(queued).state == "queued"
    assert cancel(stack, queued)["state"] == "cancelled"
    assert cancel(stack, queued)["state"] == "cancelled"

    assert cancel(stack, busy)["state"] in ("cancelling", "cancelled")
    stack.wait_state(busy, {"cancelled"}, DEADLINE_S)
    # The worker is free and has read the queued job's message by now: it did not run it.
    probe = stack.submit(SHORT)
    stack.wait_state(probe, {"succeeded"}, DEADLINE_S)
    job = stack.job(queued)
    assert job.state == "cancelled" and job.attempt == 0 and job.started_at is None


def test_cancel_while_running_stops_between_steps_and_keeps_a_checkpoint(stack):
    job_id = stack.submit(ENDLESS)
    wait_training(stack, job_id)
    first = cancel(stack, job_id)
    assert first["state"] in ("cancelling", "cancelled") and first["cancel_requested"]
    assert cancel(stack, job_id)["state"] in ("cancelling", "cancelled")
    job = stack.wait_state(job_id, {"cancelled", "succeeded", "failed"}, DEADLINE_S)
    assert job.state == "cancelled" and job.attempt == 1
    with stack.sessions() as session:
        names = session.scalars(select(Artifact.name).where(Artifact.job_id == job_id)).all()
    assert any(name.startswith("checkpoints/") for name in names), names
    again = cancel(stack, job_id)
    assert again["state"] == "cancelled"
    assert stack.job(job_id).finished_at == job.finished_at  # a terminal state never changes


def test_concurrent_cancels_of_a_running_job_all_answer_and_it_ends_cancelled(stack):
    job_id = stack.submit(ENDLESS)
    wait_training(stack, job_id)
    answers: list[str] = []
    barrier = threading.Barrier(4)

    def cancel_now() -> None:
        barrier.wait(timeout=10)
        answers.append(cancel(stack, job_id)["state"])

    run_threads(cancel_now, 4, deadline_s=60)
    assert len(answers) == 4 and set(answers) <= {"cancelling", "cancelled"}
    assert stack.wait_state(job_id, {"cancelled", "succeeded", "failed"}, DEADLINE_S).state == (
        "cancelled"
    )


def test_cancel_of_a_finished_job_changes_nothing(stack):
    job_id = stack.submit(SHORT)
    done = stack.wait_state(job_id, {"succeeded", "failed", "cancelled"}, DEADLINE_S)
    assert done.state == "succeeded"
    assert cancel(stack, job_id)["state"] == "succeeded"
    assert stack.job(job_id).state == "succeeded"
