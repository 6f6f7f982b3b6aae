"""A real production-shaped stack per test module: a fresh Postgres database (migrated),
a Redis database of its own (flushed), local object storage in a temporary folder, one
``noisefa worker`` subprocess and one ``noisefa serve --no-worker`` subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from noisefa.client import Client
from noisefa.commands.processes import free_port, spawn_noisefa, stop_process, wait_until_answers
from noisefa.service.settings import Settings
from tests.support import broker
from tests.support.db import migrated, new_project_key, postgres_database

# Not the service tests' DB 14: a worker consuming another suite's queue would eat its jobs.
REDIS_URL = os.environ.get("NOISEFA_TEST_WORKER_REDIS_URL", "redis://127.0.0.1:6379/15")
START_TIMEOUT_S = 90.0


def clean_env(**noisefa: str) -> dict[str, str]:
    """This environment without any NOISEFA_* variable, plus the given ones (NOISEFA_ + key).

    One OpenMP thread per process: on a small shared CI machine, torch's default (one per
    core) in several processes at once makes a job up to 15x slower (spinning threads).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOISEFA_")}
    env.setdefault("OMP_NUM_THREADS", "1")
    env.update({f"NOISEFA_{key.upper()}": value for key, value in noisefa.items()})
    return env


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """``noisefa ARGS`` in its own process group, output to ``log``."""
    with log.open("ab") as out:
        return spawn_noisefa(args, env=env, stdout=out, stderr=subprocess.STDOUT)


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    """``noisefa worker`` on the cpu queue, one job at a time."""
    return spawn(["worker", "--queues", "cpu", "--concurrency", "1"], env, log)


def start_api(args: list[str], env: dict[str, str], log: Path) -> tuple[str, subprocess.Popen]:
    """``noisefa serve ARGS`` on a free port; its URL once ``/healthz`` answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    api = spawn(["serve", "--port", str(port), *args], env, log)
    try:
        wait_until_answers(url, api, START_TIMEOUT_S)
    except (RuntimeError, TimeoutError) as exc:
        stop_process(api, sig=signal.SIGINT)
        pytest.fail(f"{exc}; its log:\n{log.read_text()[-3000:]}")
    return url, api


@dataclass
class Stack:
    """The running stack of one test module."""

    url: str
    api_key: str
    env: dict[str, str]
    home: Path
    client: Client
    worker: subprocess.Popen
    api: subprocess.Popen
    logs: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with postgres_database("noisefa_worker") as db_url:
        yield from _stack(tmp_path_factory.mktemp("stack"), db_url)


def _stack(root: Path, db_url: str) -> Iterator[Stack]:
    broker.flush(REDIS_URL)
    settings = dict(
        home=str(root / "home"),
        database_url=db_url,
        broker_url=REDIS_URL,
        storage_url=(root / "objects").as_uri(),
        work_dir=str(root / "work"),
        data_dir=str(root / "data"),  # empty: torchvision sets are "unavailable"
        heartbeat_interval_s="1",
        cancel_poll_s="0.2",
    )
    (root / "data").mkdir()
    env = clean_env(**settings)
    api_key = new_project_key(migrated(Settings(**settings)), "worker-tests")

    logs = root / "logs"
    logs.mkdir()
    worker = start_worker(env, logs / "worker.log")
    try:
        url, api = start_api(["--no-worker"], env, logs / "api.log")
    except BaseException:
        stop_process(worker)
        raise
    client = Client(url, api_key, retries=0)
    stack = Stack(url, api_key, env, root / "home", client, worker, api, logs)
    try:
        yield stack
    finally:
        client.close()
        stop_process(api, sig=signal.SIGINT)
        stop_process(stack.worker)


@pytest.fixture(scope="module")
def client(stack: Stack) -> Client:
    return stack.client
