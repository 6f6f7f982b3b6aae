"""A pack run in this process on SQLite and local storage (``execute_pack``, what the
``noisefa.run_pack`` task calls): every member ends as its own job with its own metrics and
artifacts, trained as it would be alone; a cancelled member ends at once while the others
go on, and their metrics are those of a pack nobody cancelled; a pack that runs out of
device memory trains on in halves from its members' checkpoints."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from sqlalchemy import select, update

from noisefa.engine import trainer
from noisefa.engine.contract.spec import parse_spec
from noisefa.engine.run import run_job, run_jobs
from noisefa.service.models import Artifact, Job, JobMetric
from noisefa.service.repositories.jobs import create_job
from noisefa.service.repositories.projects import get_or_create_project
from noisefa.service.settings import Settings
from noisefa.testing.db import migrated, settings_for
from noisefa.testing.specs import SMALL_METRICS, cpu_pretrain_spec
from noisefa.testing.waiting import wait_for
from noisefa.worker.attempts import AttemptRun
from noisefa.worker.execution import execute_pack

QUICK = [
    cpu_pretrain_spec(epochs=2, samples=2048, hidden=16, seed=seed, metrics=SMALL_METRICS)
    for seed in range(3)
]
# Long enough (a second or so per epoch) for a cancel to land while the others still train.
LONG = [
    cpu_pretrain_spec(epochs=3, samples=300_000, hidden=16, seed=seed, metrics=SMALL_METRICS)
    for seed in range(3)
]
DEADLINE_S = 120.0


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return migrated(settings_for(tmp_path, heartbeat_interval_s=0.5, cancel_poll_s=0.1))


def submit(sessions, specs: list[dict]) -> list[str]:
    with sessions() as session:
        project = get_or_create_project(session, "packs")
        return [create_job(session, project.id, parse_spec(s), max_attempts=3).id for s in specs]


def row(sessions, job_id: str) -> Job:
    with sessions() as session:
        return session.get(Job, job_id)


def points(sessions, job_id: str) -> dict[tuple[str, str, int], float]:
    with sessions() as session:
        rows = session.execute(
            select(JobMetric.phase, JobMetric.name, JobMetric.epoch, JobMetric.value).where(
                JobMetric.job_id == job_id
            )
        ).all()
    return {(phase, name, epoch): value for phase, name, epoch, value in rows}


def file_points(folder: Path) -> dict[tuple[str, str, int], float]:
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return {(p["phase"], p["name"], p["epoch"]): p["value"] for p in map(json.loads, lines)}


def artifact_names(sessions, job_id: str) -> set[str]:
    with sessions() as session:
        return set(session.scalars(select(Artifact.name).where(Artifact.job_id == job_id)))


def test_every_member_of_a_pack_ends_as_its_own_job_trained_as_alone(
    settings, sessions, tmp_path: Path
):
    job_ids = submit(sessions, QUICK)
    assert execute_pack(job_ids, settings) == dict.fromkeys(job_ids, "succeeded")
    for job_id, spec in zip(job_ids, QUICK, strict=True):
        done = row(sessions, job_id)
        assert done.state == "succeeded" and done.attempt == 1
        assert done.progress["phase"] == "pretrain" and done.progress["epoch"] == 2
        names = artifact_names(sessions, job_id)
        assert {"result.json", "metrics.jsonl", done.result["final_checkpoint"]} <= names
        alone = run_job(parse_spec(spec), tmp_path / job_id)
        stored = points(sessions, job_id)
        assert stored.keys() == file_points(tmp_path / job_id).keys()
        # A stack's bmm may round unlike a single run's (tests/engine/test_stack.py).
        for key, value in file_points(tmp_path / job_id).items():
            assert stored[key] == pytest.approx(value, rel=1e-5, abs=1e-4), key
        assert done.result["final_checkpoint"] == alone["final_checkpoint"]
    seeds = {row(sessions, job_id).result["final_metrics"]["train_loss"] for job_id in job_ids}
    assert len(seeds) == 3, "each member trained its own seed"
    assert not any(settings.resolved_work_dir.glob("*/attempt-*")), "scratch files left behind"


def test_a_pack_runs_only_its_queued_members(settings, sessions):
    job_ids = submit(sessions, QUICK)
    with sessions() as session:  # cancelled before the pack started: never runs
        session.execute(update(Job).where(Job.id == job_ids[0]).values(cancel_requested=True))
        session.commit()
    assert execute_pack(job_ids, settings) == dict.fromkeys(job_ids[1:], "succeeded")
    assert row(sessions, job_ids[0]).state == "cancelled"
    assert execute_pack(job_ids, settings) == {}  # a redelivered message runs nothing


def test_a_cancelled_member_ends_at_once_and_the_others_finish_unchanged(
    settings, sessions, tmp_path: Path
):
    job_ids = submit(sessions, LONG)
    ended: dict = {}
    pack = threading.Thread(target=lambda: ended.update(execute_pack(job_ids, settings)))
    pack.start()
    try:
        cancelled = job_ids[1]

        def first_epoch_stored() -> bool:
            return any(
                name.startswith("checkpoints/") for name in artifact_names(sessions, cancelled)
            )

        wait_for(first_epoch_stored, DEADLINE_S, "the first checkpoint", poll_s=0.05)
        with sessions() as session:
            session.execute(update(Job).where(Job.id == cancelled).values(cancel_requested=True))
            session.commit()
        wait_for(
            lambda: row(sessions, cancelled).state == "cancelled",
            DEADLINE_S,
            "the cancelled member to end",
            poll_s=0.05,
        )
        # It ended while the rest of its pack still trains, not when the pack ended.
        assert {row(sessions, job_id).state for job_id in job_ids if job_id != cancelled} == {
            "running"
        }
    finally:
        pack.join(DEADLINE_S)
    assert ended == {job_ids[0]: "succeeded", cancelled: "cancelled", job_ids[2]: "succeeded"}
    stopped = row(sessions, cancelled)
    assert stopped.progress["epoch"] >= 2, "its last position was written"
    assert any(name.startswith("checkpoints/") for name in artifact_names(sessions, cancelled))

    folders = [tmp_path / "uncancelled" / str(i) for i in range(len(LONG))]
    run_jobs([parse_spec(spec) for spec in LONG], folders)
    for job_id, folder in zip(job_ids, folders, strict=True):
        if job_id != cancelled:
            assert points(sessions, job_id) == file_points(folder), "others are unchanged"


def test_a_member_that_cannot_start_ends_at_once_while_the_others_train(settings, sessions):
    gone = "checkpoint:deleted-upload"
    job_ids = submit(sessions, [LONG[0], {**LONG[1], "init_from": gone}, LONG[2]])
    ended: dict = {}
    pack = threading.Thread(target=lambda: ended.update(execute_pack(job_ids, settings)))
    pack.start()
    try:
        wait_for(
            lambda: row(sessions, job_ids[1]).state == "failed",
            DEADLINE_S,
            "the member without its init_from checkpoint to fail",
            poll_s=0.05,
        )
        assert {row(sessions, job_ids[0]).state, row(sessions, job_ids[2]).state} == {"running"}
    finally:
        pack.join(DEADLINE_S)
    failed = row(sessions, job_ids[1])
    assert failed.error_reason == "invalid_spec"
    assert failed.error_message == f"init_from: {gone} is no longer a checkpoint of this project"
    assert ended == {job_ids[0]: "succeeded", job_ids[1]: "failed", job_ids[2]: "succeeded"}


def test_members_keep_heartbeating_while_waiting_for_their_end_and_one_failing_end_skips_none(
    settings, sessions, monkeypatch
):
    job_ids = submit(sessions, QUICK)
    first, last = job_ids[0], job_ids[-1]
    beats: list = []
    finish = AttemptRun._finish

    def slow_failing_end(self, outcome):
        if self.attempt.job_id != first:
            return finish(self, outcome)
        beats.append(row(sessions, last).heartbeat_at)
        time.sleep(4 * settings.heartbeat_interval_s)  # an upload or a tracker drain
        beats.append(row(sessions, last).heartbeat_at)
        raise RuntimeError("the storage went away")

    monkeypatch.setattr(AttemptRun, "_finish", slow_failing_end)
    ended = execute_pack(job_ids, settings)
    assert ended == {first: None, job_ids[1]: "succeeded", last: "succeeded"}
    assert beats[1] > beats[0], "the last member went silent while the first one ended"
    assert row(sessions, first).state == "running"  # left to the reaper, as a dead worker's


def test_a_diverging_member_fails_at_once_while_the_others_train(settings, sessions):
    # SGD at lr 10 with weight decay 1 multiplies each weight by -9 a step: NaN in epoch 1.
    # Another optimizer is another stack, trained first here (the pack's first member).
    wild = {
        **LONG[1],
        "pretrain": {
            **LONG[1]["pretrain"],
            "optimizer": {"name": "sgd", "lr": 10.0, "momentum": 0.9, "weight_decay": 1.0},
        },
    }
    job_ids = submit(sessions, [wild, LONG[0], LONG[2]])
    ended: dict = {}
    pack = threading.Thread(target=lambda: ended.update(execute_pack(job_ids, settings)))
    pack.start()
    try:
        wait_for(
            lambda: row(sessions, job_ids[0]).state == "failed",
            DEADLINE_S,
            "the diverged member to fail",
            poll_s=0.05,
        )
        # It ended after its first epoch, before the others had trained theirs.
        assert {row(sessions, job_ids[1]).state, row(sessions, job_ids[2]).state} == {"running"}
        for job_id in job_ids[1:]:
            last = LONG[0]["pretrain"]["epochs"]
            assert ("pretrain", "train_loss", last) not in points(sessions, job_id)
    finally:
        pack.join(DEADLINE_S)
    assert ended == {job_ids[0]: "failed", job_ids[1]: "succeeded", job_ids[2]: "succeeded"}
    diverged = row(sessions, job_ids[0])
    assert diverged.error_reason == "diverged", diverged.error_message


def device_that_fits(monkeypatch, runs: int) -> Counter:
    """A device with room for ``runs`` stacked runs from the second epoch on: a step of a
    bigger stack raises ``torch.OutOfMemoryError`` there, as CUDA's allocator does (no GPU
    here). Counts the steps tried by (optimizer, stack size, epoch), as they happen."""
    tried: Counter = Counter()
    step = trainer.PhaseStack._step

    def step_on_the_device(self, size: int) -> None:
        tried[(self.plan.optimizer.name, len(self.ids), self.epoch)] += 1
        if len(self.ids) > runs and self.epoch >= 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        step(self, size)

    monkeypatch.setattr(trainer.PhaseStack, "_step", step_on_the_device)
    return tried


def test_a_pack_out_of_memory_trains_on_in_halves_from_its_checkpoints(
    settings, sessions, tmp_path: Path, monkeypatch
):
    fourth = cpu_pretrain_spec(epochs=2, samples=2048, hidden=16, seed=3, metrics=SMALL_METRICS)
    specs = [*QUICK, fourth]
    job_ids = submit(sessions, specs)
    tried = device_that_fits(monkeypatch, runs=2)
    assert execute_pack(job_ids, settings) == dict.fromkeys(job_ids, "succeeded")
    # Four ran epoch 1 and ran out in epoch 2; the halves resumed at epoch 2, not from 0.
    assert set(tried) == {("adam", 4, 0), ("adam", 4, 1), ("adam", 2, 1)}
    monkeypatch.undo()
    for job_id, spec in zip(job_ids, specs, strict=True):
        run_job(parse_spec(spec), tmp_path / job_id)
        stored = points(sessions, job_id)
        assert stored.keys() == file_points(tmp_path / job_id).keys()
        for key, value in file_points(tmp_path / job_id).items():
            assert stored[key] == pytest.approx(value, rel=1e-5, abs=1e-4), key


def test_runs_that_run_out_of_memory_alone_fail_out_of_memory(settings, sessions, monkeypatch):
    job_ids = submit(sessions, QUICK[:2])
    tried = device_that_fits(monkeypatch, runs=0)
    assert execute_pack(job_ids, settings) == dict.fromkeys(job_ids, "failed")
    assert set(tried) == {("adam", 2, 0), ("adam", 2, 1), ("adam", 1, 1)}
    for job_id in job_ids:
        failed = row(sessions, job_id)
        assert failed.error_reason == "out_of_memory", failed.error_message
        assert "device memory" in failed.error_message


def test_a_member_that_left_early_is_not_retrained_after_an_out_of_memory(
    settings, sessions, monkeypatch
):
    # Another optimizer is another stack, trained first: it diverges in its first epoch and
    # its end fails once (storage down); then the pair runs out of memory in epoch 2.
    wild = {
        **QUICK[2],
        "pretrain": {
            **QUICK[2]["pretrain"],
            "optimizer": {"name": "sgd", "lr": 10.0, "momentum": 0.9, "weight_decay": 1.0},
        },
    }
    job_ids = submit(sessions, [wild, QUICK[0], QUICK[1]])
    real_finish = AttemptRun._finish
    failed_once: list[str] = []

    def finish(self, outcome):
        if self.attempt.job_id == job_ids[0] and not failed_once:
            failed_once.append(self.attempt.job_id)
            raise RuntimeError("object storage is down")
        return real_finish(self, outcome)

    steps = device_that_fits(monkeypatch, runs=1)
    monkeypatch.setattr(AttemptRun, "_finish", finish)
    ended = execute_pack(job_ids, settings)
    assert failed_once == [job_ids[0]]
    assert ended == {job_ids[0]: "failed", job_ids[1]: "succeeded", job_ids[2]: "succeeded"}
    assert row(sessions, job_ids[0]).error_reason == "diverged"
    per_epoch = QUICK[2]["pretrain"]["samples_per_epoch"] // QUICK[2]["pretrain"]["batch_size"]
    assert steps[("sgd", 1, 0)] == per_epoch  # trained once, not again in a half
    assert steps[("adam", 2, 1)] == 1 and steps[("adam", 1, 1)] == 2 * per_epoch
