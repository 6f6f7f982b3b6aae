"""SIGKILL a worker mid-training: the reaper re-queues the job after the heartbeat timeout, a
new worker resumes it from its last checkpoint, and the result is the same as a run that was
never interrupted: same final metrics, every metric point once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from noisefa.engine.contract.spec import parse_spec
from noisefa.engine.run import run_job
from noisefa.service.models import Artifact, JobEvent, JobMetric
from noisefa.testing.sizes import FULL
from noisefa.testing.specs import cpu_pretrain_spec as pretrain_spec

JOB_DEADLINE_S = 240.0
SPEC = pretrain_spec(epochs=6 if FULL else 4, samples=4096, hidden=16, seed=7)


def checkpoints(stack, job_id: str) -> list[str]:
    with stack.sessions() as session:
        names = session.scalars(select(Artifact.name).where(Artifact.job_id == job_id)).all()
    return [name for name in names if name.startswith("checkpoints/")]


def metric_points(stack, job_id: str) -> dict[tuple[str, str, int], float]:
    with stack.sessions() as session:
        rows = session.execute(
            select(JobMetric.phase, JobMetric.name, JobMetric.epoch, JobMetric.value).where(
                JobMetric.job_id == job_id
            )
        ).all()
    return {(phase, name, epoch): value for phase, name, epoch, value in rows}


def metric_events_per_epoch(stack, job_id: str) -> Counter[int]:
    with stack.sessions() as session:
        rows = session.scalars(
            select(JobEvent.data).where(JobEvent.job_id == job_id, JobEvent.type == "metrics")
        ).all()
    return Counter(data["epoch"] for data in rows)


@pytest.mark.usefixtures("one_torch_thread")  # the reference's float sums: the worker's
def test_a_killed_workers_job_resumes_elsewhere_and_ends_as_if_never_interrupted(
    stack, tmp_path: Path
):
    (first_worker,) = stack.use_workers(1)
    job_id = stack.submit(SPEC)

    # Kill once a checkpoint is uploaded and the job is still training the next epoch.
    def mid_training() -> bool:
        job = stack.job(job_id)
        assert job.state in ("queued", "running"), f"ended before the kill: {job.state}"
        return job.state == "running" and bool(checkpoints(stack, job_id))

    stack.wait_for(mid_training, JOB_DEADLINE_S, "a checkpoint of the running job", poll_s=0.05)
    stack.kill_worker(first_worker)
    killed_at = stack.job(job_id)
    assert killed_at.state == "running" and killed_at.attempt == 1

    stack.start_worker()
    job = stack.wait_state(job_id, {"succeeded", "failed", "cancelled"}, JOB_DEADLINE_S)
    assert job.state == "succeeded", f"{job.error_reason}: {job.error_message}\n{stack.log_tail()}"
    assert job.attempt == 2  # exactly one more attempt: resumed once, never run twice at once
    # Resumed, not restarted: the epochs before the checkpoint were reported by attempt 1 only.
    assert metric_events_per_epoch(stack, job_id)[0] == 1

    reference = run_job(parse_spec(SPEC), tmp_path / "reference")
    assert job.result["final_metrics"] == reference["final_metrics"]
    assert stack.duplicated_metric_points([job_id]) == 0
    points = metric_points(stack, job_id)
    epochs = sorted({epoch for _, _, epoch in points})
    assert epochs == list(range(SPEC["pretrain"]["epochs"] + 1))  # epoch 0 is before training
    last = SPEC["pretrain"]["epochs"]
    for name, value in reference["final_metrics"].items():
        assert points[("pretrain", name, last)] == value, name
