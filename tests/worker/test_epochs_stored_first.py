"""Epochs are written off the training thread, but what depends on them waits for them: a
checkpoint is stored only once the epochs before it are (a resumed attempt starts after its
checkpoint's epoch, so an epoch still waiting when the worker died would be lost for good),
and a job ends only once its epochs are (writes after its end are refused, and its report
reads them). ``worker/callbacks.py``, ``worker/attempts.py``, on SQLite in this process."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import select

from noisefa.engine.contract.spec import parse_spec
from noisefa.engine.contract.states import JobState
from noisefa.service.models import Artifact, Job, JobMetric
from noisefa.service.repositories import execution
from noisefa.service.repositories.jobs import create_job
from noisefa.service.repositories.projects import get_or_create_project
from noisefa.service.storage import storage_from_settings
from noisefa.testing.busy_writer import writer_busy
from noisefa.testing.specs import pretrain_spec
from noisefa.worker.attempts import AttemptRun
from noisefa.worker.epoch_writer import EpochWriter

DEADLINE_S = 30
# Far longer than a local upload or end that does not wait; a test cannot fail from it
# when the upload or end does wait.
UNBLOCKED_S = 0.5


@pytest.fixture
def attempts(sessions) -> tuple[execution.Attempt, execution.Attempt]:
    """Two started attempts: one to keep the writer busy, one under test."""
    with sessions() as session:
        project = get_or_create_project(session, "epochs-first")
        spec = parse_spec(pretrain_spec())
        return tuple(
            execution.start_attempt(
                session, create_job(session, project.id, spec, max_attempts=3).id
            )
            for _ in range(2)
        )


@pytest.fixture
def writer(sessions) -> Iterator[EpochWriter]:
    writer = EpochWriter(sessions, retry_s=5)
    yield writer
    writer.stop()


def started(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args)
    thread.start()
    thread.join(UNBLOCKED_S)
    return thread


def stored(sessions, job_id: str) -> tuple[str, list[str], list[float]]:
    """The job's state, artifact names and losses in the database."""
    with sessions() as session:
        state = session.get(Job, job_id).state
        names = session.scalars(select(Artifact.name).where(Artifact.job_id == job_id)).all()
        losses = session.scalars(
            select(JobMetric.value).where(JobMetric.job_id == job_id, JobMetric.name == "loss")
        ).all()
    return state, list(names), list(losses)


def test_a_checkpoint_is_stored_only_after_the_epochs_before_it(
    settings, sessions, attempts, writer
):
    busy, attempt = attempts
    run = AttemptRun(attempt, settings, sessions, storage_from_settings(settings), writer)
    checkpoint = run.out_dir / "checkpoints" / "epoch-1.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"weights")
    with writer_busy(writer, busy):
        run.callbacks.on_epoch_end("pretrain", 1, {"loss": 1.0})
        upload = started(run.callbacks.on_checkpoint, checkpoint)
        assert upload.is_alive(), "the checkpoint waits for its epoch"
        assert stored(sessions, attempt.job_id) == ("running", [], [])
    upload.join(DEADLINE_S)
    assert stored(sessions, attempt.job_id) == ("running", ["checkpoints/epoch-1.pt"], [1.0])


def test_a_job_ends_only_after_its_epochs_are_stored(settings, sessions, attempts, writer):
    busy, attempt = attempts
    run = AttemptRun(attempt, settings, sessions, storage_from_settings(settings), writer)
    with writer_busy(writer, busy):
        run.callbacks.on_epoch_end("pretrain", 1, {"loss": 1.0})
        end = started(run.finish, {"state": JobState.CANCELLED})
        assert end.is_alive(), "the end waits for the epoch"
        assert stored(sessions, attempt.job_id) == ("running", [], [])
    end.join(DEADLINE_S)
    assert run.state == JobState.CANCELLED
    assert stored(sessions, attempt.job_id) == ("cancelled", [], [1.0])
