"""The experiment's life in the database, acted out as workers would: fan-out creates every
run once, the waiting experiment is never reaped, the finish is claimed only when every run
has ended (and a later claim fences an earlier one), cancel reaches the runs."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from noisefa.engine.contract.bodies import parse_job
from noisefa.engine.contract.experiment_spec import expand_experiment
from noisefa.service.models import Job, Project, utcnow
from noisefa.service.repositories import execution, reaping
from noisefa.service.repositories import experiments as experiment_repo
from noisefa.service.repositories import jobs as job_repo
from noisefa.testing.specs import experiment_spec, train_spec

BODY = experiment_spec(train_spec(epochs=1, device="cpu"))


def started_experiment(session) -> execution.Attempt:
    project = Project(name=f"p-{utcnow().timestamp()}")
    session.add(project)
    session.commit()
    spec = parse_job(BODY)
    job = job_repo.create_job(session, project.id, spec, max_attempts=3)
    attempt = execution.start_attempt(session, job.id)
    assert attempt is not None
    return attempt


def fan_out(session, attempt: execution.Attempt) -> list[tuple[str, str]] | None:
    runs = expand_experiment(parse_job(attempt.spec))
    return experiment_repo.create_children(session, attempt, runs, max_attempts=3)


def end_runs(session, parent_id: str, state: str = "succeeded") -> None:
    session.execute(update(Job).where(Job.parent_id == parent_id).values(state=state))
    session.commit()


def test_fan_out_creates_each_run_once(session):
    attempt = started_experiment(session)
    first = fan_out(session, attempt)
    again = fan_out(session, attempt)  # a redelivered message
    assert first is not None and len(first) == 4
    assert sorted(again) == sorted(first)
    runs = experiment_repo.children(session, attempt.job_id)
    assert {(r.condition, r.spec["model"]["seed"]) for r in runs} == {
        (c, s) for c in ("bp", "fa") for s in (0, 1)
    }


def test_a_waiting_experiment_is_not_reaped(session):
    attempt = started_experiment(session)
    fan_out(session, attempt)
    past = utcnow() - timedelta(hours=1)
    session.execute(update(Job).where(Job.id == attempt.job_id).values(heartbeat_at=past))
    session.commit()
    reaped = reaping.reap_stale(session, heartbeat_timeout_s=1)
    assert attempt.job_id not in {r.job_id for r in reaped}


def test_finish_is_claimed_only_when_every_run_ended_and_the_last_claim_wins(session):
    attempt = started_experiment(session)
    fan_out(session, attempt)
    assert experiment_repo.claim_finish(session, attempt.job_id) is None
    first_run = experiment_repo.children(session, attempt.job_id)[0]
    assert experiment_repo.due_parent(session, first_run.id) is None
    end_runs(session, attempt.job_id)
    assert experiment_repo.due_parent(session, first_run.id) == (attempt.job_id, "cpu")
    early = experiment_repo.claim_finish(session, attempt.job_id)
    late = experiment_repo.claim_finish(session, attempt.job_id)
    assert early is not None and late is not None
    assert not execution.finish(session, early, "succeeded", result={})
    assert execution.finish(session, late, "succeeded", result={})
    assert experiment_repo.claim_finish(session, attempt.job_id) is None


def test_a_lost_aggregate_message_is_found_by_the_sweep(session):
    attempt = started_experiment(session)
    fan_out(session, attempt)
    assert experiment_repo.stalled_experiments(session, older_than_s=0) == []
    end_runs(session, attempt.job_id, "failed")
    past = utcnow() - timedelta(minutes=5)
    session.execute(update(Job).where(Job.id == attempt.job_id).values(updated_at=past))
    session.commit()
    stalled = experiment_repo.stalled_experiments(session, older_than_s=60)
    assert (attempt.job_id, "cpu") in stalled
    assert (attempt.job_id, "cpu") not in experiment_repo.stalled_experiments(session, 60)


def test_cancel_reaches_the_runs_and_ends_the_experiment(session):
    attempt = started_experiment(session)
    fan_out(session, attempt)
    runs = experiment_repo.children(session, attempt.job_id)
    running = execution.start_attempt(session, runs[0].id)
    assert running is not None
    parent = session.scalar(select(Job).where(Job.id == attempt.job_id))
    job_repo.cancel_job(session, parent)
    experiment_repo.cancel_children(session, attempt.job_id)
    session.expire_all()
    states = {r.id: r.state for r in experiment_repo.children(session, attempt.job_id)}
    assert states.pop(runs[0].id) == "cancelling"
    assert set(states.values()) == {"cancelled"}
    assert fan_out(session, attempt) is None  # a late fan-out creates nothing more
    assert execution.finish(session, running, "cancelled")
    experiment_repo.cancel_children(session, attempt.job_id)  # the run ended: the parent ends
    session.expire_all()
    assert session.scalar(select(Job.state).where(Job.id == attempt.job_id)) == "cancelled"


def test_progress_counts_the_runs_that_ended_of_all(session):
    attempt = started_experiment(session)
    fan_out(session, attempt)

    def progress() -> dict:
        session.expire_all()
        return session.scalar(select(Job.progress).where(Job.id == attempt.job_id))

    assert progress() == {"phase": "experiment", "children_done": 0, "children_total": 4}
    runs = experiment_repo.children(session, attempt.job_id)
    assert experiment_repo.parents_of(session, [runs[0].id]) == {attempt.job_id: runs[0].id}
    assert experiment_repo.parents_of(session, [attempt.job_id]) == {}
    ids = [attempt.job_id, runs[2].id, runs[0].id, runs[1].id]  # a pack's: one parent, once
    assert experiment_repo.parents_of(session, ids) == {attempt.job_id: runs[2].id}
    for run, state in zip(runs[:2], ("succeeded", "failed"), strict=True):
        session.execute(update(Job).where(Job.id == run.id).values(state=state))
    session.commit()
    recorded = experiment_repo.record_children_done(session, attempt.job_id)
    assert recorded == {"phase": "experiment", "children_done": 2, "children_total": 4}
    assert progress() == recorded
    end_runs(session, attempt.job_id)
    experiment_repo.record_children_done(session, attempt.job_id)
    assert progress()["children_done"] == 4
    late = experiment_repo.claim_finish(session, attempt.job_id)
    assert late is not None and execution.finish(session, late, "succeeded", result={})
    assert experiment_repo.record_children_done(session, attempt.job_id) is None  # it ended
