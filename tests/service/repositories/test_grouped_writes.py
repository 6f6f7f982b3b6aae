"""A worker task's repeated writes are grouped: the epoch writer and the monitor's tick write
every member of a pack in one transaction, each member still fenced by its own lease
(``worker/epoch_writer.py``, ``worker/monitor.py``, ``repositories/running.py``), on both
backends."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import create_engine, event, select

from noisefa.engine.contract.spec import parse_spec
from noisefa.service.db import make_sessionmaker
from noisefa.service.models import Job, JobMetric
from noisefa.service.repositories import execution
from noisefa.service.repositories.jobs import create_job
from noisefa.service.repositories.projects import get_or_create_project
from noisefa.service.repositories.running import EpochMetrics
from noisefa.testing.busy_writer import writer_busy
from noisefa.testing.specs import pretrain_spec
from noisefa.worker.epoch_writer import EpochWriter
from noisefa.worker.monitor import JobMonitor, MonitorThread


@pytest.fixture
def sessions(app):
    return app.state.sessionmaker


@pytest.fixture
def commits_of(app) -> Iterator[Callable[[str], int]]:
    """The commits made on the app's database so far by the thread of a given name (the
    API's own background threads commit too)."""
    names: list[str] = []

    def on_commit(connection) -> None:
        names.append(threading.current_thread().name)

    engine = app.state.sessionmaker.kw["bind"]
    event.listen(engine, "commit", on_commit)
    yield lambda name: names.count(name)
    event.remove(engine, "commit", on_commit)


def started(session, count: int) -> list[execution.Attempt]:
    project = get_or_create_project(session, "grouped-writes")
    spec = parse_spec(pretrain_spec())
    jobs = [create_job(session, project.id, spec, max_attempts=3).id for _ in range(count)]
    return [execution.start_attempt(session, job_id) for job_id in jobs]


def made_stale(session, attempt: execution.Attempt) -> execution.Attempt:
    """Hand the job to a second attempt, as the reaper does: ``attempt``'s lease is gone."""
    job = session.get(Job, attempt.job_id)
    job.state = "queued"
    session.commit()
    return execution.start_attempt(session, attempt.job_id)


def losses(session, job_id: str) -> dict[int, float]:
    rows = session.execute(
        select(JobMetric.epoch, JobMetric.value).where(
            JobMetric.job_id == job_id, JobMetric.name == "loss"
        )
    )
    return dict(rows.all())


def write_while_busy(writer: EpochWriter, busy: execution.Attempt, epochs: list[EpochMetrics]):
    """Hand ``epochs`` over while the writer is busy with an epoch of ``busy`` (so they all
    wait for the same next write); per epoch whether its lease held, after a flush."""
    held: dict[int, bool] = {}
    with writer_busy(writer, busy):
        for i, epoch in enumerate(epochs):
            writer.add(epoch, lambda ok, i=i: held.__setitem__(i, ok))
    writer.flush()
    return [held[i] for i in range(len(epochs))]


def test_epochs_that_wait_while_one_is_written_are_written_in_one_transaction(
    session, sessions, commits_of
):
    busy, *members = started(session, 5)
    writer = EpochWriter(sessions, retry_s=5)
    try:
        epochs = [EpochMetrics(m, "pretrain", 1, {"loss": float(i)}) for i, m in enumerate(members)]
        assert write_while_busy(writer, busy, epochs) == [True] * 4
        assert commits_of("epoch-writer") == 2  # the busy one's, then the four together
    finally:
        writer.stop()
    assert [losses(session, m.job_id) for m in members] == [{1: 0.0}, {1: 1.0}, {1: 2.0}, {1: 3.0}]


def test_a_refused_epoch_in_a_shared_write_loses_only_its_own_lease(session, sessions):
    busy, stale, live = started(session, 3)
    fresh = made_stale(session, stale)
    writer = EpochWriter(sessions, retry_s=5)
    try:
        epochs = [
            EpochMetrics(stale, "pretrain", 2, {"loss": -1.0}),
            EpochMetrics(live, "pretrain", 2, {"loss": 2.0}),
        ]
        assert write_while_busy(writer, busy, epochs) == [False, True]
    finally:
        writer.stop()
    assert losses(session, stale.job_id) == {} and fresh.attempt == 2
    assert losses(session, live.job_id) == {2: 2.0}


def test_an_epoch_that_fails_in_a_shared_write_costs_only_its_own_run(session, sessions):
    busy, bad, good = started(session, 3)
    writer = EpochWriter(sessions, retry_s=5)
    try:
        epochs = [
            EpochMetrics(bad, "pretrain", 1, {"loss": object()}),  # cannot be stored
            EpochMetrics(good, "pretrain", 1, {"loss": 1.0}),
        ]
        assert write_while_busy(writer, busy, epochs) == [False, True]
    finally:
        writer.stop()
    assert losses(session, bad.job_id) == {}
    assert losses(session, good.job_id) == {1: 1.0}


def test_a_lease_is_one_job_and_its_own_token_never_another_jobs(session):
    first, second = started(session, 2)
    crossed = dataclasses.replace(first, lease_token=second.lease_token)
    assert execution.touch_each(session, [crossed, second]) == {second.job_id}
    session.commit()


def test_stop_writes_what_is_waiting_first(session, sessions):
    (member,) = started(session, 1)
    writer = EpochWriter(sessions, retry_s=5)
    for epoch in (1, 2, 3):
        writer.add(EpochMetrics(member, "pretrain", epoch, {"loss": float(epoch)}), lambda ok: None)
    writer.stop()
    assert losses(session, member.job_id) == {1: 1.0, 2: 2.0, 3: 3.0}


def test_epochs_that_cannot_be_written_past_the_retry_deadline_are_refused(session):
    (member,) = started(session, 1)
    nowhere = create_engine("postgresql+psycopg://noisefa@127.0.0.1:1/none")  # nothing listens
    writer = EpochWriter(make_sessionmaker(nowhere), retry_s=0.5)
    held: list[bool] = []
    try:
        writer.add(EpochMetrics(member, "pretrain", 1, {"loss": 1.0}), held.append)
        writer.flush()
    finally:
        writer.stop()
        nowhere.dispose()
    assert held == [False]


def test_a_monitor_tick_writes_every_member_in_one_transaction_and_polls_once(
    session, sessions, settings, commits_of
):
    stale, live, cancelled, quiet = started(session, 4)
    made_stale(session, stale)
    job = session.get(Job, cancelled.job_id)
    job.cancel_requested = True
    session.commit()
    monitors = [
        JobMonitor(attempt, sessions, settings) for attempt in (stale, live, cancelled, quiet)
    ]
    for i, monitor in enumerate(monitors[:3]):  # the quiet one only heartbeats
        monitor.set_position((1, "pretrain", 1, 2, i, 10, time.monotonic()))
    quiet_beat = session.get(Job, quiet.job_id).heartbeat_at
    thread = MonitorThread(monitors, settings, sessions)  # ticked here, not started
    later = time.monotonic() + 3600  # every heartbeat and poll is due
    name = threading.current_thread().name
    before = commits_of(name)

    thread.tick(monitors, later)

    assert commits_of(name) - before == 2  # the beats, then the cancel polls
    assert [m.lease_lost for m in monitors] == [True, False, False, False]
    assert [m.cancel_seen.is_set() for m in monitors] == [False, False, True, False]
    session.expire_all()
    progress = [session.get(Job, a.job_id).progress for a in (live, cancelled)]
    assert [p["step"] for p in progress] == [1, 2]
    assert session.get(Job, stale.job_id).progress is None  # the new attempt's, untouched
    quiet_job = session.get(Job, quiet.job_id)
    assert quiet_job.progress is None and quiet_job.heartbeat_at > quiet_beat
