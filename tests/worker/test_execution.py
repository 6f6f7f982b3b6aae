"""``execute_job`` in-process on SQLite and local storage: what each way a run can end
writes to the job (state, reason, a message without internals), and what a success stores."""

from __future__ import annotations

import pytest
import torch
from sqlalchemy import select

from noisefa.engine.contract.errors import DatasetUnavailableError
from noisefa.engine.contract.spec import parse_spec
from noisefa.service.models import Artifact, Job
from noisefa.service.repositories.jobs import create_job
from noisefa.service.repositories.projects import get_or_create_project
from noisefa.testing.specs import SMALL_METRICS, cpu_pretrain_spec
from noisefa.worker import execution, pack_execution

SPEC = cpu_pretrain_spec(epochs=2, samples=1024, hidden=16, metrics=SMALL_METRICS)


def submit(sessions, spec: dict = SPEC) -> str:
    with sessions() as session:
        project = get_or_create_project(session, "execution")
        return create_job(session, project.id, parse_spec(spec), max_attempts=3).id


def job(sessions, job_id: str) -> Job:
    with sessions() as session:
        return session.get(Job, job_id)


def failing_run(error: BaseException):
    def run_jobs(*_args, **_kwargs):
        raise error

    return run_jobs


def test_a_successful_run_stores_result_metrics_checkpoints_and_progress(settings, sessions):
    job_id = submit(sessions)
    assert execution.execute_job(job_id, settings) == "succeeded"
    done = job(sessions, job_id)
    assert done.state == "succeeded" and done.result["final_checkpoint"]
    assert done.progress["phase"] == "pretrain" and done.progress["epochs"] == 2
    with sessions() as session:
        names = set(session.scalars(select(Artifact.name).where(Artifact.job_id == job_id)))
    assert {"result.json", "metrics.jsonl", done.result["final_checkpoint"]} <= names
    assert not (settings.resolved_work_dir / job_id).exists(), "scratch files left behind"


@pytest.mark.parametrize(
    ("error", "reason", "says"),
    [
        (DatasetUnavailableError("dataset 'mnist' is missing"), "dataset_unavailable", "mnist"),
        (torch.OutOfMemoryError("CUDA out of memory"), "out_of_memory", "memory"),
        (RuntimeError("secret detail in /srv/internal/path"), "internal", "RuntimeError"),
    ],
)
def test_a_failed_run_records_its_reason_and_a_plain_message(
    settings, sessions, monkeypatch, error, reason, says
):
    monkeypatch.setattr(pack_execution, "run_jobs", failing_run(error))
    job_id = submit(sessions)
    assert execution.execute_job(job_id, settings) == "failed"
    failed = job(sessions, job_id)
    assert (failed.state, failed.error_reason) == ("failed", reason)
    assert says in failed.error_message
    assert "Traceback" not in failed.error_message and "/srv/internal" not in failed.error_message


def test_a_job_cancelled_before_it_started_does_not_run(settings, sessions, monkeypatch):
    monkeypatch.setattr(pack_execution, "run_jobs", failing_run(AssertionError("must not run")))
    job_id = submit(sessions)
    with sessions() as session:
        session.get(Job, job_id).cancel_requested = True
        session.commit()
    assert execution.execute_job(job_id, settings) is None
    assert job(sessions, job_id).state == "cancelled"


def test_a_job_that_is_not_queued_is_left_alone(settings, sessions):
    job_id = submit(sessions)
    assert execution.execute_job(job_id, settings) == "succeeded"
    assert execution.execute_job(job_id, settings) is None  # a redelivered message
    assert job(sessions, job_id).attempt == 1
