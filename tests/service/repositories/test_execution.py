"""The worker-facing writes: one attempt at a time, and a stale attempt's writes refused."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from noisefa.engine.contract.spec import parse_spec
from noisefa.service.models import Job, JobEvent, JobMetric, utcnow
from noisefa.service.repositories import execution, reaping, running
from noisefa.service.repositories.jobs import create_job
from noisefa.service.repositories.projects import get_or_create_project
from noisefa.testing.specs import pretrain_spec
from noisefa.testing.threads import run_threads


@pytest.fixture
def job_id(session) -> str:
    project = get_or_create_project(session, "execution-tests")
    return create_job(session, project.id, parse_spec(pretrain_spec()), max_attempts=3).id


def requeue(session, job_id: str) -> None:
    """What the reaper does to a job whose worker went silent."""
    job = session.get(Job, job_id)
    job.state = "queued"
    session.commit()


def event_types(session, job_id: str) -> list[tuple[str, dict]]:
    rows = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
    return [(row.type, row.data) for row in rows]


def test_start_attempt_claims_a_queued_job_once(session, job_id):
    attempt = execution.start_attempt(session, job_id)
    assert attempt is not None and attempt.attempt == 1 and attempt.kind == "pretrain"
    assert attempt.spec["pretrain"]["dataset"] == "digits"
    assert execution.start_attempt(session, job_id) is None
    job = session.scalars(select(Job).where(Job.id == job_id)).one()
    assert job.state == "running" and job.started_at and job.heartbeat_at
    assert event_types(session, job_id)[-1] == ("state", {"state": "running", "attempt": 1})


def test_start_attempt_refuses_missing_and_finished_jobs(session, job_id):
    assert execution.start_attempt(session, "no-such-job") is None
    attempt = execution.start_attempt(session, job_id)
    execution.finish(session, attempt, "succeeded", result={})
    assert execution.start_attempt(session, job_id) is None


def test_two_concurrent_starts_give_exactly_one_attempt(app, job_id):
    barrier = threading.Barrier(2)
    results = []

    def claim() -> None:
        with app.state.sessionmaker() as own_session:
            barrier.wait(timeout=10)
            results.append(execution.start_attempt(own_session, job_id))

    run_threads(claim, 2, deadline_s=30)
    assert sorted(result is None for result in results) == [False, True]


def test_queued_job_with_cancel_requested_ends_cancelled_instead_of_starting(session, job_id):
    job = session.get(Job, job_id)
    job.cancel_requested = True
    session.commit()
    assert execution.start_attempt(session, job_id) is None
    session.expire_all()
    assert session.get(Job, job_id).state == "cancelled"
    assert event_types(session, job_id)[-1][1]["state"] == "cancelled"


def test_a_stale_attempts_writes_are_refused(session, job_id):
    stale = execution.start_attempt(session, job_id)
    requeue(session, job_id)
    fresh = execution.start_attempt(session, job_id)
    assert fresh.attempt == 2 and fresh.lease_token != stale.lease_token
    assert not running.heartbeat(session, stale)
    assert not running.report_progress(session, stale, {"phase": "pretrain"})
    assert not running.record_epoch(session, stale, "pretrain", 1, {"loss": 1.0})
    assert not execution.record_artifact(session, stale, "checkpoints/a", "k", 1, "x/y")
    assert not execution.finish(session, stale, "succeeded")
    assert running.heartbeat(session, fresh)
    assert execution.finish(session, fresh, "succeeded", result={"final_checkpoint": "c"})
    assert not running.heartbeat(session, fresh)  # terminal: nothing more is written
    assert session.scalars(select(JobMetric).where(JobMetric.job_id == job_id)).all() == []


def test_a_resumed_epoch_overwrites_its_metrics_instead_of_duplicating(session, job_id):
    attempt = execution.start_attempt(session, job_id)
    assert running.record_epoch(session, attempt, "pretrain", 1, {"loss": 2.0, "acc": 0.1})
    assert running.record_epoch(session, attempt, "pretrain", 1, {"loss": 1.5})
    rows = session.execute(
        select(JobMetric.name, JobMetric.value).where(JobMetric.job_id == job_id)
    ).all()
    assert sorted(rows) == [("acc", 0.1), ("loss", 1.5)]
    metrics_events = [data for kind, data in event_types(session, job_id) if kind == "metrics"]
    assert metrics_events[-1] == {"phase": "pretrain", "epoch": 1, "metrics": {"loss": 1.5}}


def test_cancelling_job_can_still_be_finished_by_its_worker(session, job_id):
    attempt = execution.start_attempt(session, job_id)
    assert not running.cancel_requested(session, job_id)
    job = session.get(Job, job_id)
    job.state, job.cancel_requested = "cancelling", True
    session.commit()
    assert running.cancel_requested(session, job_id)
    assert running.heartbeat(session, attempt)
    assert execution.finish(session, attempt, "cancelled")
    assert event_types(session, job_id)[-1][1] == {"state": "cancelled", "attempt": 1}


def test_checkpoint_lookups_find_the_newest_and_the_final_one(session, job_id):
    attempt = execution.start_attempt(session, job_id)
    assert execution.checkpoint_artifacts(session, job_id) == []
    for epoch in (1, 2):
        name = f"checkpoints/epoch-{epoch}"
        key = execution.artifact_key(attempt.project_id, job_id, name)
        execution.record_artifact(session, attempt, name, key, 10 * epoch, "application/x")
    execution.record_artifact(session, attempt, "result.json", "k", 2, "application/json")
    newest_first = execution.checkpoint_artifacts(session, job_id)
    assert [a.name for a in newest_first] == ["checkpoints/epoch-2", "checkpoints/epoch-1"]
    latest = newest_first[0]
    assert latest.storage_key == f"{attempt.project_id}/jobs/{job_id}/checkpoints/epoch-2"
    assert execution.init_checkpoint_artifact(session, attempt.project_id, job_id) is None
    execution.finish(session, attempt, "succeeded", result={"final_checkpoint": latest.name})
    found = execution.init_checkpoint_artifact(session, attempt.project_id, job_id)
    assert found.name == "checkpoints/epoch-2"
    assert execution.init_checkpoint_artifact(session, "other-project", job_id) is None


def test_artifact_keys_cannot_escape_the_job_folder():
    with pytest.raises(ValueError):
        execution.artifact_key("p", "j", "../other/x")


def age_heartbeat(session, job_id: str, seconds: float) -> None:
    job = session.get(Job, job_id)
    job.heartbeat_at = utcnow() - timedelta(seconds=seconds)
    job.updated_at = job.heartbeat_at
    session.commit()


def test_reaper_requeues_a_silent_job_and_fences_its_old_worker(session, job_id):
    stale = execution.start_attempt(session, job_id)
    assert reaping.reap_stale(session, heartbeat_timeout_s=60) == []
    age_heartbeat(session, job_id, 120)
    reaped = reaping.reap_stale(session, heartbeat_timeout_s=60)
    assert [(r.job_id, r.state, r.queue) for r in reaped] == [(job_id, "queued", "cpu")]
    assert not running.heartbeat(session, stale)
    assert execution.start_attempt(session, job_id).attempt == 2


def test_reaper_fails_a_job_worker_lost_after_max_attempts(session, job_id):
    for _ in range(3):
        execution.start_attempt(session, job_id)
        age_heartbeat(session, job_id, 120)
        reaped = reaping.reap_stale(session, heartbeat_timeout_s=60)
    assert reaped[0].state == "failed"
    session.expire_all()
    job = session.get(Job, job_id)
    assert job.state == "failed" and job.error_reason == "worker_lost" and job.finished_at


def test_reaper_ends_a_silent_cancelling_job_cancelled(session, job_id):
    execution.start_attempt(session, job_id)
    job = session.get(Job, job_id)
    job.state = "cancelling"
    session.commit()
    age_heartbeat(session, job_id, 120)
    assert reaping.reap_stale(session, heartbeat_timeout_s=60)[0].state == "cancelled"


def test_queued_jobs_whose_message_may_be_lost_are_resent_once_per_interval(session, job_id):
    assert job_id not in dict(reaping.stale_queued_jobs(session, older_than_s=60))
    age_heartbeat(session, job_id, 120)
    assert (job_id, "cpu") in reaping.stale_queued_jobs(session, older_than_s=60)
    assert job_id not in dict(reaping.stale_queued_jobs(session, older_than_s=60))
