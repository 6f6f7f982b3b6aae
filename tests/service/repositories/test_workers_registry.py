"""The worker registry: workers register, heartbeat and deregister; a silent one stops counting
as live and is pruned later; ``/readyz`` counts live workers per queue and names a queue with
queued jobs that no live worker consumes. Real databases, a real registration thread."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import update

from noisefa.engine.contract.catalogue import builtin_files, builtins_on_disk
from noisefa.service.app import create_app
from noisefa.service.models import Worker, new_id, utcnow
from noisefa.service.reaper import sweep
from noisefa.service.repositories import workers as repo
from noisefa.testing.db import migrated, new_project_key, settings_for
from noisefa.testing.specs import pretrain_spec
from noisefa.testing.waiting import wait_for
from noisefa.worker.registry import WorkerRegistration

TIMEOUT_S = 60.0


def register(session, queues=("cpu",)) -> str:
    worker_id = new_id()
    repo.register_worker(
        session, worker_id, hostname="host", pid=1, queues=queues, datasets=["digits"]
    )
    return worker_id


def age(session, worker_id: str, seconds: float) -> None:
    """Make the worker's last heartbeat ``seconds`` old, as if it had gone silent then."""
    session.execute(
        update(Worker)
        .where(Worker.id == worker_id)
        .values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
    )
    session.commit()


def test_live_workers_are_counted_per_queue_and_silent_ones_are_not(session):
    before = repo.live_workers_per_queue(session, TIMEOUT_S, ["cpu", "gpu"])
    both = register(session, queues=("gpu", "cpu"))
    cpu_only = register(session)
    silent = register(session)
    age(session, silent, TIMEOUT_S + 1)
    try:
        counts = repo.live_workers_per_queue(session, TIMEOUT_S, ["cpu", "gpu"])
        assert counts == {"cpu": before["cpu"] + 2, "gpu": before["gpu"] + 1}
        assert session.get(Worker, both).queues == ["cpu", "gpu"]
    finally:
        for worker_id in (both, cpu_only, silent):
            repo.deregister_worker(session, worker_id)
    assert repo.live_workers_per_queue(session, TIMEOUT_S, ["cpu", "gpu"]) == before


def test_a_heartbeat_revives_a_silent_worker_and_pruning_removes_only_long_dead_ones(session):
    dozing = register(session)
    dead = register(session)
    age(session, dozing, TIMEOUT_S + 1)
    age(session, dead, 2 * 86_400)
    assert repo.heartbeat_worker(session, dozing)
    assert repo.prune_dead_workers(session, 86_400) >= 1
    assert session.get(Worker, dead) is None
    assert dozing in {worker.id for worker in repo.live_workers(session, TIMEOUT_S)}
    # A pruned worker learns it from its next heartbeat and registers again.
    assert not repo.heartbeat_worker(session, dead)
    repo.deregister_worker(session, dozing)
    assert not repo.heartbeat_worker(session, dozing)


def test_the_reaper_prunes_workers_silent_past_the_retention(app, settings, session):
    dead, dozing = register(session), register(session)
    age(session, dead, 120)
    age(session, dozing, 30)
    retention = settings.model_copy(update={"dead_worker_retention_s": 60})
    try:
        done = sweep(app.state.sessionmaker, app.state.celery, retention)
        assert done.pruned_workers >= 1
        session.expire_all()
        assert session.get(Worker, dead) is None
        assert session.get(Worker, dozing) is not None
    finally:
        repo.deregister_worker(session, dozing)


def test_a_registration_holds_a_live_row_with_its_datasets_until_stopped(settings, session):
    data_dir = settings.home / "data"
    for path in builtin_files("mnist"):
        (data_dir / path).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / path).write_bytes(b"")
    assert builtins_on_disk(data_dir) == {"digits", "mnist"}
    fast = settings.model_copy(update={"data_dir": data_dir, "heartbeat_interval_s": 0.1})
    registration = WorkerRegistration(fast)
    registration.start(["cpu", "gpu"])
    try:
        row = wait_for(
            lambda: session.get(Worker, registration.worker_id, populate_existing=True),
            TIMEOUT_S,
            "the worker's row",
        )
        assert (row.queues, row.datasets) == (["cpu", "gpu"], ["digits", "mnist"])
        first_beat = row.heartbeat_at
        wait_for(
            lambda: session.get(Worker, row.id, populate_existing=True).heartbeat_at > first_beat,
            TIMEOUT_S,
            "a heartbeat",
        )
        # Pruned while cut off: the next heartbeat registers it again.
        repo.deregister_worker(session, row.id)
        wait_for(
            lambda: session.get(Worker, row.id, populate_existing=True),
            TIMEOUT_S,
            "the worker to register again",
        )
    finally:
        registration.stop()
    session.expire_all()
    assert session.get(Worker, registration.worker_id) is None


def test_readyz_counts_live_workers_and_names_a_queue_nobody_serves(tmp_path: Path):
    settings = migrated(settings_for(tmp_path, reaper_enabled=False))
    key = {"Authorization": f"Bearer {new_project_key(settings)}"}
    with TestClient(create_app(settings)) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["workers"] == {"cpu": 0, "gpu": 0}

        assert client.post("/v1/jobs", json=pretrain_spec(), headers=key).status_code == 202
        refused = client.get("/readyz")
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/problem+json"
        assert (
            refused.json()["detail"] == "not ready: no live worker for queue cpu (queued jobs: 1)"
        )

        with client.app.state.sessionmaker() as session:
            worker_id = register(session, queues=("cpu",))
            ready = client.get("/readyz")
            assert ready.status_code == 200
            assert ready.json()["workers"] == {"cpu": 1, "gpu": 0}

            age(session, worker_id, settings.heartbeat_timeout_s + 1)
            assert client.get("/readyz").status_code == 503
