"""SIGKILL the worker training a pack: the reaper re-queues every member after the heartbeat
timeout and sends them back as a pack, a new worker resumes each from its own newest
checkpoint, and every member ends exactly as in a pack that was never interrupted."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from noisefa.engine.contract.spec import parse_spec
from noisefa.engine.run import run_jobs
from noisefa.service.models import Artifact, Job, JobEvent, JobMetric
from noisefa.testing.faults import FAULT_SETTINGS
from noisefa.testing.redis_dbs import redis_url
from noisefa.testing.sizes import FULL
from noisefa.testing.specs import cpu_pretrain_spec, experiment_spec
from noisefa.testing.stack import Stack, local_stack

DEADLINE_S = 240.0
# The kill comes as soon as every member has its first checkpoint, so the rest of the run is
# what resumes: three epochs of ~1.5 s in CI are plenty, and the full size trains longer.
EPOCHS, SAMPLES = (6, 400_000) if FULL else (4, 250_000)
BODY = experiment_spec(
    cpu_pretrain_spec(epochs=EPOCHS, samples=SAMPLES, hidden=16),
    conditions={"fa": {}},
    seeds=[0, 1, 2],
)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """This module's stack: the worker suite's Redis database, a reaper that notices a dead
    worker within seconds."""
    root = tmp_path_factory.mktemp("packs-killed")
    with local_stack(
        root, name="noisefa_packs", broker_url=redis_url("worker"), **FAULT_SETTINGS
    ) as stack:
        yield stack


def children(stack: Stack, parent_id: str) -> list[Job]:
    with stack.sessions() as session:
        return list(session.scalars(select(Job).where(Job.parent_id == parent_id)))


def has_checkpoint(stack: Stack, job_id: str) -> bool:
    with stack.sessions() as session:
        names = session.scalars(select(Artifact.name).where(Artifact.job_id == job_id)).all()
    return any(name.startswith("checkpoints/") for name in names)


def metric_points(stack: Stack, job_id: str) -> dict[tuple[str, str, int], float]:
    with stack.sessions() as session:
        rows = session.execute(
            select(JobMetric.phase, JobMetric.name, JobMetric.epoch, JobMetric.value).where(
                JobMetric.job_id == job_id
            )
        ).all()
    return {(phase, name, epoch): value for phase, name, epoch, value in rows}


def metric_events_per_epoch(stack: Stack, job_id: str) -> Counter[int]:
    with stack.sessions() as session:
        rows = session.scalars(
            select(JobEvent.data).where(JobEvent.job_id == job_id, JobEvent.type == "metrics")
        ).all()
    return Counter(data["epoch"] for data in rows)


@pytest.mark.usefixtures("one_torch_thread")  # the reference's float sums: the worker's
def test_a_killed_pack_resumes_every_member_exactly(stack: Stack, tmp_path: Path):
    (first_worker,) = stack.use_workers(1)
    parent = stack.submit(BODY)

    def every_member_mid_training() -> bool:
        runs = children(stack, parent)
        assert all(run.state in ("queued", "running") for run in runs), "ended before the kill"
        return len(runs) == 3 and all(
            run.state == "running" and has_checkpoint(stack, run.id) for run in runs
        )

    stack.wait_for(every_member_mid_training, DEADLINE_S, "a checkpoint of each member", 0.05)
    stack.kill_worker(first_worker)
    second_worker_log = len(list((stack.root / "logs").glob("*.log"))) + 1
    stack.start_worker()

    done = stack.wait_state(parent, {"succeeded", "failed", "cancelled"}, DEADLINE_S)
    assert done.state == "succeeded", f"{done.error_message}\n{stack.log_tail()}"
    runs = sorted(children(stack, parent), key=lambda run: run.spec["model"]["seed"])
    folders = [tmp_path / run.id for run in runs]
    run_jobs([parse_spec(run.spec) for run in runs], folders)  # never interrupted
    for run, folder in zip(runs, folders, strict=True):
        assert run.state == "succeeded" and run.attempt == 2, (run.id, run.error_message)
        # Resumed, not restarted: epoch 0 was reported by the first attempt only.
        assert metric_events_per_epoch(stack, run.id)[0] == 1
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        reference = {
            (p["phase"], p["name"], p["epoch"]): p["value"] for p in map(json.loads, lines)
        }
        assert metric_points(stack, run.id) == reference, run.id
    assert stack.duplicated_metric_points([run.id for run in runs]) == 0
    # They came back as a pack (or packs, cut for the workers that looked alive).
    log = next(path for path in (stack.root / "logs").glob(f"{second_worker_log:02d}-*.log"))
    assert "pack of" in log.read_text(errors="replace"), log.read_text()[-3000:]
