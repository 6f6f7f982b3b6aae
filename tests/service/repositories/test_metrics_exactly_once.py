"""A resumed attempt overwrites the epochs it repeats: no metric point is duplicated or lost,
and the dead attempt's late writes change nothing."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from noisefa.engine.contract.spec import parse_spec
from noisefa.service.models import Job, JobMetric, utcnow
from noisefa.service.repositories import execution, reaping, running
from noisefa.service.repositories.jobs import create_job
from noisefa.service.repositories.projects import get_or_create_project
from noisefa.testing.specs import pretrain_spec


def points(session, job_id: str) -> dict[tuple[str, str, int], float]:
    rows = session.execute(
        select(JobMetric.phase, JobMetric.name, JobMetric.epoch, JobMetric.value).where(
            JobMetric.job_id == job_id
        )
    )
    return {(phase, name, epoch): value for phase, name, epoch, value in rows}


def test_a_resumed_attempt_overwrites_repeated_epochs_and_never_duplicates(session):
    project = get_or_create_project(session, "metrics-once")
    job_id = create_job(session, project.id, parse_spec(pretrain_spec(3)), max_attempts=3).id
    first = execution.start_attempt(session, job_id)
    for epoch in (1, 2):
        running.record_epoch(session, first, "pretrain", epoch, {"loss": 10.0 + epoch, "a": 1.0})

    # The worker dies mid-epoch 3; the reaper hands the job to a second attempt, which
    # resumes from the epoch-1 checkpoint and so repeats epoch 2.
    job = session.get(Job, job_id)
    job.heartbeat_at = utcnow() - timedelta(seconds=600)
    session.commit()
    assert reaping.reap_stale(session, heartbeat_timeout_s=60)[0].state == "queued"
    second = execution.start_attempt(session, job_id)
    assert second.attempt == 2
    for epoch in (2, 3):
        running.record_epoch(session, second, "pretrain", epoch, {"loss": 20.0 + epoch, "a": 2.0})
    # The first attempt was only paused (not dead): its late write is refused.
    assert not running.record_epoch(session, first, "pretrain", 3, {"loss": -1.0, "a": -1.0})
    assert execution.finish(session, second, "succeeded", result={})

    assert points(session, job_id) == {
        ("pretrain", "loss", 1): 11.0,
        ("pretrain", "a", 1): 1.0,
        ("pretrain", "loss", 2): 22.0,
        ("pretrain", "a", 2): 2.0,
        ("pretrain", "loss", 3): 23.0,
        ("pretrain", "a", 3): 2.0,
    }
    per_key = session.execute(
        select(func.count())
        .select_from(JobMetric)
        .where(JobMetric.job_id == job_id)
        .group_by(JobMetric.phase, JobMetric.name, JobMetric.epoch)
    ).scalars()
    assert set(per_key) == {1}
