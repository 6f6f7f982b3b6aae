"""SIGKILL a worker mid-training and truncate the newest checkpoint it stored: the reaper
re-queues the job, a new worker passes over the damaged checkpoint (a ``checkpoint_skipped``
event names it), resumes from the previous intact one and the job succeeds."""

from __future__ import annotations

from sqlalchemy import select

from noisefa.service.models import Artifact, JobEvent
from noisefa.testing.corruption import truncate
from noisefa.testing.specs import cpu_pretrain_spec

JOB_DEADLINE_S = 240.0
SPEC = cpu_pretrain_spec(epochs=8, samples=4096, hidden=16, seed=11)


def stored_checkpoints(stack, job_id: str) -> list[Artifact]:
    """The job's checkpoint rows, newest written first."""
    with stack.sessions() as session:
        return list(
            session.scalars(
                select(Artifact)
                .where(Artifact.job_id == job_id, Artifact.name.startswith("checkpoints/"))
                .order_by(Artifact.created_at.desc(), Artifact.id.desc())
            )
        )


def skipped(stack, job_id: str) -> list[dict]:
    with stack.sessions() as session:
        return list(
            session.scalars(
                select(JobEvent.data).where(
                    JobEvent.job_id == job_id, JobEvent.type == "checkpoint_skipped"
                )
            )
        )


def test_a_resumed_job_skips_its_truncated_newest_checkpoint_and_succeeds(stack):
    (first_worker,) = stack.use_workers(1)
    job_id = stack.submit(SPEC)

    def two_checkpoints_while_running() -> bool:
        job = stack.job(job_id)
        assert job.state in ("queued", "running"), f"ended before the kill: {job.state}"
        return job.state == "running" and len(stored_checkpoints(stack, job_id)) >= 2

    stack.wait_for(two_checkpoints_while_running, JOB_DEADLINE_S, "two checkpoints", poll_s=0.05)
    stack.kill_worker(first_worker)
    newest = stored_checkpoints(stack, job_id)[0]
    truncate(stack.root / "objects" / newest.storage_key)

    stack.start_worker()
    job = stack.wait_state(job_id, {"succeeded", "failed", "cancelled"}, JOB_DEADLINE_S)
    assert job.state == "succeeded", f"{job.error_reason}: {job.error_message}\n{stack.log_tail()}"
    assert job.attempt == 2
    (event,) = skipped(stack, job_id)
    assert (event["name"], event["attempt"]) == (newest.name, 2)
    assert stack.duplicated_metric_points([job_id]) == 0
