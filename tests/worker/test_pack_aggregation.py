"""A pack's runs end together: their experiment is counted and sent "aggregate" once, not
once per member (each member, asked alone after the pack, would find it due).
``worker/experiments.py: aggregate_if_due`` on SQLite and the real Redis broker."""

from __future__ import annotations

from sqlalchemy import select, update

from noisefa.engine.contract.bodies import parse_job
from noisefa.engine.contract.experiment_spec import expand_experiment
from noisefa.service.broker import FINISH_EXPERIMENT_TASK
from noisefa.service.models import Job, JobEvent
from noisefa.service.repositories import execution
from noisefa.service.repositories import experiments as experiment_repo
from noisefa.service.repositories.jobs import create_job
from noisefa.service.repositories.projects import get_or_create_project
from noisefa.testing import broker
from noisefa.testing.db import settings_for
from noisefa.testing.specs import experiment_spec, train_spec
from noisefa.worker import tasks
from noisefa.worker.experiments import aggregate_if_due


def experiments_with_runs(session, count: int) -> dict[str, list[str]]:
    """``count`` running experiments (2 × 2 runs each): parent id → its runs' ids."""
    project = get_or_create_project(session, "pack-aggregation")
    spec = parse_job(experiment_spec(train_spec(epochs=1, device="cpu")))
    runs: dict[str, list[str]] = {}
    for _ in range(count):
        attempt = execution.start_attempt(
            session, create_job(session, project.id, spec, max_attempts=3).id
        )
        experiment_repo.create_children(session, attempt, expand_experiment(spec), max_attempts=3)
        runs[attempt.job_id] = [c.id for c in experiment_repo.children(session, attempt.job_id)]
    return runs


def children_done_events(session, parent_id: str) -> list[dict]:
    rows = session.scalars(
        select(JobEvent.data).where(JobEvent.job_id == parent_id, JobEvent.type == "progress")
    )
    return [data for data in rows if data["children_done"] > 0]


def test_a_pack_ending_sends_each_experiment_aggregate_once(settings, sessions):
    broker.flush(settings.broker_url)
    with sessions() as session:
        runs = experiments_with_runs(session, 2)
        done, live = runs.values()
        session.execute(update(Job).where(Job.id.in_(done)).values(state="succeeded"))
        session.execute(update(Job).where(Job.id.in_(live[:-1])).values(state="succeeded"))
        session.commit()
    aggregate_if_due([*done, *live[:-1]], settings)  # one pack of both experiments' runs

    due, other = runs
    assert broker.waiting_messages("cpu", settings.broker_url) == [(FINISH_EXPERIMENT_TASK, [due])]
    with sessions() as session:
        assert len(children_done_events(session, due)) == 1  # counted once
        (counted,) = children_done_events(session, other)
        assert counted["children_done"] == len(live) - 1  # still a live run: not due


def test_the_pack_task_asks_once_for_all_its_members(settings, sessions, monkeypatch):
    """``run_pack`` hands all its job ids over at once. Its runs have ended already, so the
    real task body trains nothing and goes straight to the ask."""
    broker.flush(settings.broker_url)
    with sessions() as session:
        ((parent, runs),) = experiments_with_runs(session, 1).items()
        session.execute(update(Job).where(Job.id.in_(runs)).values(state="succeeded"))
        session.commit()
    monkeypatch.setattr(tasks, "get_settings", lambda: settings)  # the test's database
    tasks.run_pack.run(runs)  # the task's body, in this process
    messages = broker.waiting_messages("cpu", settings.broker_url)
    assert messages == [(FINISH_EXPERIMENT_TASK, [parent])]


def test_a_failing_check_is_logged_not_raised_over_the_tasks_own_error(tmp_path, caplog):
    """``run_pack`` asks in its ``finally``: a raise there would hide why the pack failed."""
    # A real refused connection: nothing listens on port 1.
    unreachable = settings_for(
        tmp_path, database_url="postgresql+psycopg://noisefa@127.0.0.1:1/none"
    )
    broker.flush(unreachable.broker_url)
    aggregate_if_due(["a-job"], unreachable)
    assert "asking for their experiments' aggregation failed" in caplog.text
    assert broker.waiting_messages("cpu", unreachable.broker_url) == []
