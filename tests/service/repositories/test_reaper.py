"""The reaper's sweep: silent jobs resume elsewhere or fail ``worker_lost``; lost messages are
sent again; replicas take turns; the API process runs it on its own."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from noisefa.engine.contract.spec import parse_spec
from noisefa.service import packs
from noisefa.service.app import create_app
from noisefa.service.broker import enqueue_job, enqueue_pack
from noisefa.service.models import Job, JobEvent, utcnow
from noisefa.service.reaper import FULL_PRUNE_EVERY_S, REAPER_LOCK_KEY, SweepMemory, sweep
from noisefa.service.repositories import events, execution
from noisefa.service.repositories.jobs import create_job
from noisefa.service.repositories.projects import get_or_create_project
from noisefa.service.repositories.reaping import stale_queued_jobs
from noisefa.testing import broker
from noisefa.testing.db import migrated, settings_for
from noisefa.testing.specs import pretrain_spec
from noisefa.testing.waiting import wait_for

DEADLINE_S = 30.0


@pytest.fixture
def job_id(session) -> str:
    project = get_or_create_project(session, "reaper-tests")
    return create_job(session, project.id, parse_spec(pretrain_spec()), max_attempts=2).id


def age(session, job_id: str, seconds: float) -> None:
    """Make the job's heartbeat and last update ``seconds`` old (its worker went silent)."""
    job = session.get(Job, job_id)
    job.heartbeat_at = job.updated_at = utcnow() - timedelta(seconds=seconds)
    session.commit()


def state_of(session, job_id: str) -> Job:
    return session.scalars(
        select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
    ).one()


def test_sweep_requeues_a_silent_job_and_puts_it_back_on_the_broker(app, session, job_id):
    execution.start_attempt(session, job_id)
    age(session, job_id, app.state.settings.heartbeat_timeout_s + 60)
    done = sweep(app.state.sessionmaker, app.state.celery, app.state.settings)
    assert done.ran and done.requeued == [job_id]
    assert state_of(session, job_id).state == "queued"
    assert job_id in broker.queued_job_ids("cpu")
    assert execution.start_attempt(session, job_id).attempt == 2


def test_sweep_fails_a_job_worker_lost_once_its_attempts_are_spent(app, session, job_id):
    timeout = app.state.settings.heartbeat_timeout_s
    for _ in range(2):
        execution.start_attempt(session, job_id)
        age(session, job_id, timeout + 60)
        done = sweep(app.state.sessionmaker, app.state.celery, app.state.settings)
    assert done.failed == [job_id]
    job = state_of(session, job_id)
    assert job.state == "failed" and job.error_reason == "worker_lost"
    assert "heartbeat" in job.error_message


def test_sweep_leaves_live_jobs_alone(app, session, job_id):
    execution.start_attempt(session, job_id)
    done = sweep(app.state.sessionmaker, app.state.celery, app.state.settings)
    assert job_id not in done.requeued + done.failed
    assert state_of(session, job_id).state == "running"


def test_sweep_resends_a_job_queued_too_long_whose_message_is_gone(app, session, job_id):
    broker.flush()  # a Redis restart: every waiting message is lost
    age(session, job_id, app.state.settings.requeue_after_s + 60)
    done = sweep(app.state.sessionmaker, app.state.celery, app.state.settings)
    assert job_id in done.resent
    assert job_id in broker.queued_job_ids("cpu")
    again = sweep(app.state.sessionmaker, app.state.celery, app.state.settings)
    assert job_id not in again.resent  # once per interval, not every sweep


def test_a_backlog_still_waiting_on_the_broker_is_not_resent(tmp_path):
    settings = migrated(settings_for(tmp_path, broker_url=None, reaper_enabled=False))
    app = create_app(settings)  # the embedded file broker: a queue of our own
    with app.state.sessionmaker() as session:
        project = get_or_create_project(session, "backlog")
        job_id = create_job(session, project.id, parse_spec(pretrain_spec()), max_attempts=1).id
        enqueue_job(app.state.celery, job_id, "cpu")
        age(session, job_id, settings.requeue_after_s + 60)
        assert sweep(app.state.sessionmaker, app.state.celery, settings).resent == []
        for message in (tmp_path / "broker" / "queue").iterdir():
            message.unlink()  # the broker lost it
        assert sweep(app.state.sessionmaker, app.state.celery, settings).resent == [job_id]


def test_only_the_jobs_of_a_lost_pack_are_resent_not_those_a_waiting_pack_names(app, session):
    project = get_or_create_project(session, "lost-pack")
    spec = parse_spec(pretrain_spec())
    ids = [create_job(session, project.id, spec, max_attempts=1).id for _ in range(4)]
    enqueue_pack(app.state.celery, ids[:2], "cpu")  # waiting; the pack of ids[2:] was lost
    for job_id in ids:
        age(session, job_id, app.state.settings.requeue_after_s + 60)
    done = sweep(app.state.sessionmaker, app.state.celery, app.state.settings)
    assert set(done.resent) & set(ids) == set(ids[2:])
    assert set(ids[2:]) <= set(broker.queued_job_ids("cpu"))


def test_requeued_jobs_are_sent_one_by_one_when_planning_packs_fails(
    app, session, job_id, monkeypatch
):
    def broken_plan(*args, **kwargs):
        raise RuntimeError("an estimate that raises")

    monkeypatch.setattr(packs, "plan_packs", broken_plan)
    broker.flush()
    execution.start_attempt(session, job_id)
    age(session, job_id, app.state.settings.heartbeat_timeout_s + 60)
    done = sweep(app.state.sessionmaker, app.state.celery, app.state.settings)
    assert done.requeued == [job_id]
    assert job_id in broker.queued_job_ids("cpu")


def test_only_one_replica_sweeps_at_a_time(app, session, settings):
    if not settings.resolved_database_url.startswith("postgresql"):
        pytest.skip("replicas share Postgres; the embedded SQLite mode has one API process")
    with app.state.sessionmaker() as other_replica:
        other_replica.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": REAPER_LOCK_KEY})
        done = sweep(app.state.sessionmaker, app.state.celery, app.state.settings)
        other_replica.rollback()
    assert not done.ran
    assert sweep(app.state.sessionmaker, app.state.celery, app.state.settings).ran


def test_the_api_process_reaps_a_dead_workers_job_on_its_own(tmp_path):
    settings = migrated(
        settings_for(
            tmp_path,
            heartbeat_interval_s=0.25,
            heartbeat_timeout_s=1.0,
            reaper_interval_s=0.1,
            max_attempts=3,
        )
    )
    app = create_app(settings)
    with app.state.sessionmaker() as session:
        project = get_or_create_project(session, "lifespan-reaper")
        job_id = create_job(session, project.id, parse_spec(pretrain_spec()), max_attempts=3).id
        session.commit()
        execution.start_attempt(session, job_id)  # a worker took it, then died silently
        with TestClient(app):
            wait_for(
                lambda: state_of(session, job_id).state != "running",
                DEADLINE_S,
                "the reaper to re-queue the job",
                poll_s=0.1,
            )
        job = state_of(session, job_id)
    assert job.state == "queued" and job.attempt == 1 and job.lease_token is None


def test_a_held_job_is_resent_only_once_its_hold_is_long_over(app, session):
    """A job held for a pack has no message to lose while its hold lasts; one whose hold
    ended long ago was never released (the API now runs without ``pack_window_s``)."""
    project = get_or_create_project(session, "reaper-held")
    spec = parse_spec(pretrain_spec())
    hour = timedelta(hours=1)
    ended = create_job(session, project.id, spec, max_attempts=2, hold_until=utcnow() - hour)
    lasting = create_job(session, project.id, spec, max_attempts=2, hold_until=utcnow() + hour)
    for job in (ended, lasting):
        age(session, job.id, 3600)
    resent = {job_id for job_id, _ in stale_queued_jobs(session, older_than_s=60)}
    assert ended.id in resent and lasting.id not in resent
    assert state_of(session, ended.id).hold_until is None  # sent: no longer held
    assert state_of(session, lasting.id).hold_until is not None


def events_of(session, job_id: str) -> list[tuple[str, dict]]:
    rows = session.execute(
        select(JobEvent.type, JobEvent.data).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
    )
    return [(type_, data) for type_, data in rows]


def test_sweep_prunes_old_superseded_progress_keeping_each_jobs_latest(app, session, job_id):
    """A long run's progress events do not pile up: old ones go but each job's latest; the
    recent ones, and every state and metrics event, stay."""
    project = get_or_create_project(session, "reaper-tests")
    quiet = create_job(session, project.id, parse_spec(pretrain_spec()), max_attempts=2).id
    retention = app.state.settings.progress_event_retention_s
    old, recent = utcnow() - timedelta(seconds=retention + 60), utcnow()
    rows = [
        (job_id, "progress", {"step": 1}, old),
        (job_id, "metrics", {"epoch": 1}, old),
        (job_id, "progress", {"step": 2}, old),
        (job_id, "progress", {"step": 3}, recent),
        (job_id, "progress", {"step": 4}, recent),
        (quiet, "progress", {"step": 9}, old),  # its latest: kept however old
    ]
    for job, type_, data, at in rows:
        session.add(JobEvent(job_id=job, type=type_, data=data, created_at=at))
    session.commit()
    before = events_of(session, job_id)
    done = sweep(app.state.sessionmaker, app.state.celery, app.state.settings)
    assert done.pruned_progress >= 2  # the backend's database is shared by other tests
    kept = events_of(session, job_id)
    assert [data for type_, data in kept if type_ == "progress"] == [{"step": 3}, {"step": 4}]
    assert [e for e in before if e[0] != "progress"] == [e for e in kept if e[0] != "progress"]
    assert events_of(session, quiet)[-1] == ("progress", {"step": 9})
    sweep(app.state.sessionmaker, app.state.celery, app.state.settings)
    assert events_of(session, job_id) == kept, "a second sweep finds nothing more to prune"


def test_later_sweeps_prune_only_what_aged_since_the_last_in_batches(
    app, session, job_id, monkeypatch
):
    """A replica's sweeps remember their last cutoff: the next one looks only at events that
    aged past it since (each job's latest stays old for good, and would be found again every
    sweep), and deletes in batches."""
    settings = app.state.settings
    retention = settings.progress_event_retention_s
    now = utcnow()
    long_ago = now - timedelta(seconds=retention + 3600)  # before the last sweep's window
    just_aged = now - timedelta(seconds=retention + 5)
    for step, at in enumerate([long_ago, *[just_aged] * 5, now]):
        session.add(JobEvent(job_id=job_id, type="progress", data={"step": step}, created_at=at))
    session.commit()
    last = now - timedelta(seconds=retention + 30)
    memory = SweepMemory(progress_cutoff=last, full_prune_at=time.monotonic())
    monkeypatch.setattr(events, "PRUNE_BATCH", 2)

    done = sweep(app.state.sessionmaker, app.state.celery, settings, memory)

    steps = [data["step"] for type_, data in events_of(session, job_id) if type_ == "progress"]
    assert steps == [0, 6], "the five that aged since went, in batches; the older one is left"
    assert done.pruned_progress >= 5
    assert memory.progress_cutoff > now - timedelta(seconds=retention)
    memory.full_prune_at -= FULL_PRUNE_EVERY_S  # an hour on: it looks at everything again
    sweep(app.state.sessionmaker, app.state.celery, settings, memory)
    steps = [data["step"] for type_, data in events_of(session, job_id) if type_ == "progress"]
    assert steps == [6]


def test_a_failing_prune_keeps_its_memory_and_the_sweep_still_sends(
    app, session, job_id, monkeypatch
):
    def fail(*args):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(events, "prune_superseded_progress", fail)
    execution.start_attempt(session, job_id)
    age(session, job_id, app.state.settings.heartbeat_timeout_s + 60)
    memory = SweepMemory()
    done = sweep(app.state.sessionmaker, app.state.celery, app.state.settings, memory)
    assert done.requeued == [job_id] and job_id in broker.queued_job_ids("cpu")
    assert memory == SweepMemory(), "the next sweep prunes from where this one started"
