"""The embedded default end to end: ``noisefa serve`` with only ``NOISEFA_HOME`` set (SQLite,
local objects, filesystem broker, a worker child process), driven over real HTTP."""

from __future__ import annotations

import contextlib
import os
import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from noisefa.client import Client
from noisefa.commands.processes import stop_process
from noisefa.testing.embedded import START_TIMEOUT_S, Server, children, start_server, wait_gone
from noisefa.testing.specs import SMALL_METRICS
from noisefa.testing.waiting import wait_for

JOB_TIMEOUT_S = 180.0
MODEL = {"hidden": [16], "seed": 1}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("embedded")
    server = start_server(root / "home", root / "serve.log")
    try:
        yield server
    finally:
        stop_process(server.process, sig=signal.SIGINT, timeout_s=30)


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[Client]:
    key = (server.home / "api_key").read_text().strip()
    with Client(server.url, key, retries=0) as client:
        yield client


def test_first_start_creates_a_private_key_file_and_prints_the_key_once(server: Server):
    key_file = server.home / "api_key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert server.log.read_text().count(key) == 1
    assert (server.home / "noisefa.db").is_file()


def test_pretrain_then_train_from_it_on_the_embedded_stack(client: Client, tmp_path: Path):
    from noisefa.engine.checkpoint import model_from_checkpoint

    pretrain = client.submit(
        {
            "kind": "pretrain",
            "model": MODEL,
            "pretrain": {"dataset": "digits", "epochs": 1, "samples_per_epoch": 2048},
            "metrics": SMALL_METRICS,
        }
    )
    pretrain = client.wait(pretrain["id"], timeout=JOB_TIMEOUT_S)
    assert pretrain["state"] == "succeeded", pretrain.get("error")

    train = client.submit(
        {
            "kind": "train",
            "model": MODEL,
            "init_from": pretrain["id"],
            "train": {"dataset": "digits", "epochs": 2},
            "metrics": SMALL_METRICS,
        }
    )
    # Follow it live: the stream ends with the terminal state.
    events = list(client.events(train["id"]))
    assert events[-1]["event"] == "state" and events[-1]["data"]["state"] == "succeeded"
    assert [e["data"]["epoch"] for e in events if e["event"] == "metrics"] == [0, 1, 2]

    train = client.get(train["id"])
    assert train["state"] == "succeeded"
    accuracy = client.metrics(train["id"], name="test_accuracy")
    assert [p["epoch"] for p in accuracy] == [0, 1, 2]
    angles = client.metrics(train["id"], name="alignment_angle/2")
    assert all(0 <= p["value"] <= 180 for p in angles)

    path = client.download(train["id"], train["result"]["final_checkpoint"], tmp_path)
    model = model_from_checkpoint(path)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_sigint_stops_the_server_and_its_worker(tmp_path: Path):
    server = start_server(tmp_path / "home", tmp_path / "serve.log")
    workers = wait_for(
        lambda: children(server.process.pid),
        START_TIMEOUT_S,
        "serve to start its worker child",
        poll_s=0.1,
    )
    try:
        code = stop_process(server.process, sig=signal.SIGINT, timeout_s=30)
        assert code == 0, server.log.read_text()[-2000:]
        wait_gone(workers, 30, "the worker to exit with serve")
    finally:
        for pid in workers:  # only if the assertion above failed
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    # A second start reuses the schema and the key: nothing is printed again.
    key = (tmp_path / "home" / "api_key").read_text().strip()
    again = start_server(tmp_path / "home", tmp_path / "serve-again.log")
    try:
        assert key not in again.log.read_text()
        with Client(again.url, key, retries=0) as client:
            assert list(client.list()) == []
    finally:
        assert stop_process(again.process, sig=signal.SIGINT, timeout_s=30) == 0
