"""Stored checkpoints are checked before use and pruned as new ones land (``execute_job``
in-process on SQLite and local storage).

An attempt is interrupted the way the reaper interrupts a stalled worker: its job is
re-queued under it (``reap_stale``), its next write is refused and it stops. The next
attempt resumes from the newest stored checkpoint whose bytes match their recorded sha256,
recording a ``checkpoint_skipped`` event for each damaged one; with none intact the job
fails ``checkpoint_corrupt``.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from noisefa.engine.contract.spec import parse_spec
from noisefa.engine.run import run_job
from noisefa.service.db import engine_from_settings, make_sessionmaker
from noisefa.service.models import Artifact, Job, JobEvent
from noisefa.service.repositories.jobs import create_job
from noisefa.service.repositories.projects import get_or_create_project
from noisefa.service.repositories.reaping import reap_stale
from noisefa.service.settings import Settings
from noisefa.testing.corruption import garble_head, garble_tail, truncate
from noisefa.testing.db import migrated, settings_for, sqlite_url
from noisefa.testing.specs import cpu_pretrain_spec
from noisefa.testing.waiting import wait_for
from noisefa.worker.execution import execute_job

DEADLINE_S = 120.0
# Checkpointed every epoch and long enough to be interrupted after its second checkpoint.
LONG = cpu_pretrain_spec(epochs=12, samples=512, hidden=16, seed=3)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def submit(sessions, spec: dict) -> str:
    with sessions() as session:
        project = get_or_create_project(session, "integrity")
        return create_job(session, project.id, parse_spec(spec), max_attempts=5).id


def job(sessions, job_id: str) -> Job:
    with sessions() as session:
        return session.get(Job, job_id)


def stored_checkpoints(sessions, job_id: str) -> list[Artifact]:
    """The job's checkpoint rows, newest written first."""
    with sessions() as session:
        rows = session.scalars(
            select(Artifact)
            .where(Artifact.job_id == job_id, Artifact.name.startswith("checkpoints/"))
            .order_by(Artifact.created_at.desc(), Artifact.id.desc())
        )
        return list(rows)


def object_path(settings: Settings, artifact: Artifact) -> Path:
    return settings.home / "objects" / artifact.storage_key


def skipped_events(sessions, job_id: str) -> list[dict]:
    with sessions() as session:
        return list(
            session.scalars(
                select(JobEvent.data)
                .where(JobEvent.job_id == job_id, JobEvent.type == "checkpoint_skipped")
                .order_by(JobEvent.id)
            )
        )


def epoch_of(artifact: Artifact) -> int:
    """The epoch a boundary checkpoint was written after (``checkpoints/pretrain-0004…``)."""
    return int(artifact.name.removesuffix(".safetensors").rsplit("-", 1)[1])


def first_epoch_of_attempt(sessions, job_id: str, attempt: int) -> int:
    """The epoch of the first metrics event after attempt ``attempt`` started."""
    with sessions() as session:
        events = session.execute(
            select(JobEvent.type, JobEvent.data)
            .where(JobEvent.job_id == job_id)
            .order_by(JobEvent.id)
        ).all()
    start = events.index(("state", {"state": "running", "attempt": attempt}))
    return next(data["epoch"] for type_, data in events[start:] if type_ == "metrics")


def interrupted(settings: Settings, sessions, spec: dict) -> str:
    """A job whose first attempt stored two checkpoints, then lost its lease and stopped."""
    job_id = submit(sessions, spec)
    first = threading.Thread(target=execute_job, args=(job_id, settings), daemon=True)
    first.start()

    def two_checkpoints_stored() -> bool:
        row = job(sessions, job_id)
        assert row.state in ("queued", "running"), f"the first attempt ended: {row.state}"
        return len(stored_checkpoints(sessions, job_id)) >= 2

    wait_for(two_checkpoints_stored, DEADLINE_S, "two stored checkpoints", poll_s=0.02)

    def reaped() -> bool:  # a heartbeat landing mid-sweep makes it pass over the job: again
        with sessions() as session:
            return [r.job_id for r in reap_stale(session, heartbeat_timeout_s=0.0)] == [job_id]

    wait_for(reaped, DEADLINE_S, "the sweep to re-queue the job", poll_s=0.01)
    first.join(DEADLINE_S)
    assert not first.is_alive(), "the first attempt did not stop after losing its lease"
    stopped = job(sessions, job_id)
    assert (stopped.state, stopped.attempt) == ("queued", 1)
    return job_id


def reference_metrics(tmp_path: Path, spec: dict) -> dict:
    """The final metrics of the same spec run once, uninterrupted, in this process."""
    return run_job(parse_spec(spec), tmp_path / "reference")["final_metrics"]


def test_a_resume_skips_a_truncated_newest_checkpoint_and_ends_as_if_never_interrupted(
    settings, sessions, tmp_path
):
    job_id = interrupted(settings, sessions, LONG)
    newest, previous = stored_checkpoints(sessions, job_id)[:2]
    truncate(object_path(settings, newest))

    assert execute_job(job_id, settings) == "succeeded"
    done = job(sessions, job_id)
    assert done.attempt == 2
    (event,) = skipped_events(sessions, job_id)
    assert (event["name"], event["attempt"]) == (newest.name, 2)
    assert "damaged" in event["reason"] and str(tmp_path) not in event["reason"]
    # Resumed from the previous checkpoint (not from scratch), bit-exactly: the same end as
    # one whole run.
    assert first_epoch_of_attempt(sessions, job_id, 2) == epoch_of(previous) + 1
    assert done.result["final_metrics"] == reference_metrics(tmp_path, LONG)


def test_a_job_whose_stored_checkpoints_are_all_damaged_fails_checkpoint_corrupt(
    settings, sessions, tmp_path
):
    job_id = interrupted(settings, sessions, LONG)
    stored = stored_checkpoints(sessions, job_id)
    # The attempt may have stored one more before it noticed the lost lease: damage them all,
    # alternating the two kinds (same size: only the sha256 tells).
    assert len(stored) >= 2
    for artifact, damage in zip(stored, itertools.cycle((garble_tail, garble_head))):
        damage(object_path(settings, artifact))

    assert execute_job(job_id, settings) == "failed"
    failed = job(sessions, job_id)
    assert failed.error_reason == "checkpoint_corrupt"
    assert all(artifact.name in failed.error_message for artifact in stored)
    assert str(tmp_path) not in failed.error_message
    assert stored[0].storage_key not in failed.error_message
    assert [e["name"] for e in skipped_events(sessions, job_id)] == [a.name for a in stored]


@pytest.mark.parametrize(
    ("keep", "expected"),
    [
        (1, {"pretrain-0004", "train-0004"}),
        (2, {"pretrain-0004", "train-0003", "train-0004"}),
        (3, {"pretrain-0004", "train-0002", "train-0003", "train-0004"}),
    ],
)
def test_a_job_keeps_its_newest_checkpoints_and_each_phases_final_one(tmp_path, keep, expected):
    settings = migrated(
        settings_for(tmp_path, database_url=sqlite_url(tmp_path / "db"), checkpoint_keep=keep)
    )
    engine = engine_from_settings(settings)
    sessions = make_sessionmaker(engine)
    try:
        spec = {
            **cpu_pretrain_spec(epochs=4, samples=256, hidden=8),
            "kind": "train",
            "train": {"dataset": "digits", "epochs": 4, "batch_size": 256},
        }
        job_id = submit(sessions, spec)
        assert execute_job(job_id, settings) == "succeeded"
        stored = stored_checkpoints(sessions, job_id)
    finally:
        engine.dispose()
    names = {a.name.removeprefix("checkpoints/").removesuffix(".safetensors") for a in stored}
    assert names == expected
    objects = settings.home / "objects" / stored[0].storage_key.rsplit("/", 1)[0]
    assert {path.name for path in objects.iterdir()} == {f"{n}.safetensors" for n in expected}
    for artifact in stored:  # each row's checksum is its object's
        data = object_path(settings, artifact).read_bytes()
        assert (artifact.size, artifact.sha256) == (len(data), hashlib.sha256(data).hexdigest())


def test_a_damaged_init_from_checkpoint_fails_the_job_naming_it(settings, sessions, tmp_path):
    source = submit(sessions, cpu_pretrain_spec(epochs=1, samples=256, hidden=8))
    assert execute_job(source, settings) == "succeeded"
    final = job(sessions, source).result["final_checkpoint"]
    (artifact,) = [a for a in stored_checkpoints(sessions, source) if a.name == final]
    garble_tail(object_path(settings, artifact))

    spec = {**cpu_pretrain_spec(epochs=1, samples=256, hidden=8), "init_from": source}
    job_id = submit(sessions, spec)
    assert execute_job(job_id, settings) == "failed"
    failed = job(sessions, job_id)
    assert failed.error_reason == "checkpoint_corrupt"
    assert final in failed.error_message and str(tmp_path) not in failed.error_message
