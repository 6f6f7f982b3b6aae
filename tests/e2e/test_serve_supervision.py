"""``noisefa serve`` looks after its worker: a killed worker is restarted and its job still
succeeds; a killed ``serve`` leaves no worker or pool child behind; one ``serve`` per home;
``/readyz`` refuses a queue whose jobs no live worker will run.

Every process killed here is one this module started (or a child of one)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from noisefa.client import Client
from noisefa.commands.processes import spawn_noisefa, stop_process
from noisefa.commands.supervisor import Backoff
from noisefa.testing.embedded import (
    START_TIMEOUT_S,
    Server,
    children,
    embedded_env,
    gone,
    start_server,
)
from noisefa.testing.specs import cpu_pretrain_spec
from noisefa.testing.waiting import wait_for

# A dead worker's job is noticed within seconds (heartbeat_timeout 3 s, swept every 0.5 s).
FAST_REAPER = {
    "NOISEFA_HEARTBEAT_INTERVAL_S": "0.5",
    "NOISEFA_HEARTBEAT_TIMEOUT_S": "3",
    "NOISEFA_REAPER_INTERVAL_S": "0.5",
}
# Several seconds of training with a checkpoint every epoch: long enough to be killed mid-run.
SPEC = cpu_pretrain_spec(epochs=4, samples=200_000, hidden=16, seed=3)
RESTART_DEADLINE_S = 30.0
EXIT_DEADLINE_S = 30.0
JOB_DEADLINE_S = 240.0


def worker_of(server: Server) -> int:
    """The pid of serve's (single) worker child, once there is one."""
    workers = wait_for(lambda: children(server.process.pid), START_TIMEOUT_S, "a worker child")
    assert len(workers) == 1, workers
    return workers[0]


def wait_running(client: Client, job_id: str) -> None:
    """Until the job is running and has reported a training step."""

    def running() -> bool:
        job = client.get(job_id)
        assert job["state"] in ("queued", "running"), f"ended too soon: {job['state']}"
        return job["state"] == "running" and bool((job.get("progress") or {}).get("step"))

    wait_for(running, JOB_DEADLINE_S, f"job {job_id} to be training", poll_s=0.05)


def wait_ended(client: Client, job_id: str) -> dict:
    def ended() -> dict | None:
        job = client.get(job_id)
        return job if job["state"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(ended, JOB_DEADLINE_S, f"job {job_id} to end", poll_s=0.5)


def key_of(server: Server) -> str:
    return (server.home / "api_key").read_text().strip()


@contextlib.contextmanager
def serving(home: Path, log: Path, **options) -> Iterator[Server]:
    server = start_server(home, log, **options)
    try:
        yield server
    finally:
        stop_process(server.process, sig=signal.SIGINT, timeout_s=30)


def kill_groups(pids: list[int]) -> None:
    """SIGKILL the process groups led by ``pids`` (our own children), if still there."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def test_a_killed_worker_is_restarted_within_seconds_and_its_job_succeeds(tmp_path: Path):
    with serving(tmp_path / "home", tmp_path / "serve.log", settings=FAST_REAPER) as server:
        first = worker_of(server)
        with Client(server.url, key_of(server), retries=0) as client:
            job_id = client.submit(SPEC)["id"]
            wait_running(client, job_id)
            os.killpg(first, signal.SIGKILL)  # the worker and the pool child training

            def new_worker() -> int | None:
                workers = [pid for pid in children(server.process.pid) if pid != first]
                return workers[0] if workers else None

            second = wait_for(new_worker, RESTART_DEADLINE_S, "serve to start a new worker")
            job = wait_ended(client, job_id)
        assert job["state"] == "succeeded", (job.get("error"), server.log.read_text()[-3000:])
        assert job["attempt"] == 2
        assert second in children(server.process.pid)
        assert "was killed by SIGKILL" in server.log.read_text()


def test_sigkill_of_serve_takes_its_worker_and_pool_down_and_the_home_is_free_again(
    tmp_path: Path,
):
    home = tmp_path / "home"
    server = start_server(home, tmp_path / "serve.log", settings=FAST_REAPER)
    worker = worker_of(server)
    family = [worker]
    try:
        with Client(server.url, key_of(server), retries=0) as client:
            job_id = client.submit(SPEC)["id"]
            wait_running(client, job_id)
        family += children(worker)  # the pool child running the job
        assert len(family) >= 2, family
        server.process.kill()
        server.process.wait(timeout=EXIT_DEADLINE_S)
        wait_for(
            lambda: all(gone(pid) for pid in family),
            EXIT_DEADLINE_S,
            lambda: f"the worker and its pool to exit: {[p for p in family if not gone(p)]}",
            poll_s=0.1,
        )
    finally:
        kill_groups(family)  # only if the wait above failed

    # The lock file is still there, but its lock died with serve: a new serve starts, and its
    # worker resumes the job.
    assert (home / "serve.lock").is_file()
    with (
        serving(home, tmp_path / "serve-again.log", settings=FAST_REAPER) as again,
        Client(again.url, key_of(again), retries=0) as client,
    ):
        job = wait_ended(client, job_id)
    assert job["state"] == "succeeded", job.get("error")


@pytest.fixture(scope="module")
def api_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``serve --no-worker`` on the embedded default: nobody consumes its queues."""
    root = tmp_path_factory.mktemp("api-only")
    with serving(root / "home", root / "serve.log", args=["--no-worker"]) as server:
        yield server


def test_a_second_serve_on_the_same_home_exits_2_with_a_message(api_only: Server, tmp_path):
    second = spawn_noisefa(
        ["serve", "--no-worker", "--port", "0"],
        env=embedded_env(api_only.home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = second.communicate(timeout=START_TIMEOUT_S)
    finally:
        stop_process(second, timeout_s=5)
    assert second.returncode == 2, (out, err)
    message = err.decode()
    assert "is in use by another noisefa serve" in message
    assert f"pid {api_only.process.pid}" in message
    assert "Traceback" not in message
    assert httpx.get(f"{api_only.url}/healthz").status_code == 200  # the first one is unharmed


def test_readyz_names_a_queue_with_queued_jobs_and_no_live_worker_until_one_comes(
    api_only: Server, tmp_path: Path
):
    ready = httpx.get(f"{api_only.url}/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["workers"] == {"cpu": 0, "gpu": 0}

    with Client(api_only.url, key_of(api_only), retries=0) as client:
        job_id = client.submit(cpu_pretrain_spec())["id"]
        refused = httpx.get(f"{api_only.url}/readyz")
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/problem+json"
        assert "no live worker for queue cpu" in refused.json()["detail"]

        log = tmp_path / "worker.log"
        with log.open("ab") as out:
            worker = spawn_noisefa(
                ["worker", "--queues", "cpu"],
                env=embedded_env(api_only.home),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            job = wait_ended(client, job_id)
            assert job["state"] == "succeeded", (job.get("error"), log.read_text()[-3000:])

            def counted() -> dict | None:
                response = httpx.get(f"{api_only.url}/readyz")
                return response.json() if response.status_code == 200 else None

            body = wait_for(counted, RESTART_DEADLINE_S, "/readyz to be ready again")
            assert body["workers"] == {"cpu": 1, "gpu": 0}
        finally:
            stopped = stop_process(worker, timeout_s=30)
    # A clean shutdown deregisters the worker, and the worker exits 0 (without the
    # interpreter's teardown: noisefa.commands.worker.exit_without_teardown).
    assert stopped == 0, log.read_text()[-3000:]
    assert httpx.get(f"{api_only.url}/readyz").json()["workers"] == {"cpu": 0, "gpu": 0}


def test_restart_delays_double_up_to_the_cap_and_reset_after_a_stable_run():
    backoff = Backoff(first_s=1, cap_s=8, stable_after_s=60)
    assert [backoff.delay_after(uptime_s=2) for _ in range(6)] == [1, 2, 4, 8, 8, 8]
    assert backoff.delay_after(uptime_s=61) == 1
    assert backoff.delay_after(uptime_s=2) == 2
