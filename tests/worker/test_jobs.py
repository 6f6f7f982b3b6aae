"""Jobs through the real stack: HTTP API → Postgres + Redis → Celery worker → engine →
metrics, events and checkpoints back through the API."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from noisefa.client import TERMINAL_STATES, Client

JOB_TIMEOUT_S = 180.0

MODEL = {"hidden": [16], "seed": 0}
SMALL_METRICS = {"probe_size": 64, "readout_size": 256}
PRETRAIN = {
    "kind": "pretrain",
    "model": MODEL,
    "pretrain": {"dataset": "digits", "epochs": 2, "samples_per_epoch": 2048, "batch_size": 64},
    "device": "cpu",
    "metrics": SMALL_METRICS,
}


def train_spec(**overrides: Any) -> dict[str, Any]:
    spec = {
        "kind": "train",
        "model": MODEL,
        "train": {"dataset": "digits", "epochs": 2, "batch_size": 64},
        "device": "cpu",
        "metrics": SMALL_METRICS,
    }
    return {**spec, **overrides}


@pytest.fixture(scope="module")
def pretrained(client: Client) -> dict[str, Any]:
    job = client.submit(PRETRAIN)
    return client.wait(job["id"], timeout=JOB_TIMEOUT_S)


@pytest.fixture(scope="module")
def finetuned(client: Client, pretrained: dict[str, Any]) -> dict[str, Any]:
    job = client.submit(train_spec(init_from=pretrained["id"]))
    return client.wait(job["id"], timeout=JOB_TIMEOUT_S)


def test_pretrain_job_succeeds_with_its_metrics(client: Client, pretrained: dict[str, Any]):
    assert pretrained["state"] == "succeeded", pretrained.get("error")
    assert pretrained["attempt"] == 1
    points = client.metrics(pretrained["id"], phase="pretrain")
    names = {p["name"] for p in points}
    assert {"train_loss", "alignment_angle/2", "readout_entropy"} <= names
    assert "test_accuracy" not in names  # noise has no test split
    assert sorted({p["epoch"] for p in points}) == [0, 1, 2]


def test_train_from_pretrained_job_succeeds_with_metrics(client: Client, finetuned):
    assert finetuned["state"] == "succeeded", finetuned.get("error")
    final = finetuned["result"]["final_metrics"]
    assert 0.0 <= final["test_accuracy"] <= 1.0
    points = client.metrics(finetuned["id"], name="test_accuracy")
    assert [p["epoch"] for p in points] == [0, 1, 2]
    assert all(p["phase"] == "train" for p in points)


def test_metrics_are_paginated_without_loss_or_duplicates(client: Client, finetuned):
    everything = client.metrics(finetuned["id"])
    keys = [(p["phase"], p["name"], p["epoch"]) for p in everything]
    assert len(keys) == len(set(keys))
    first = client._request("GET", f"/v1/jobs/{finetuned['id']}/metrics", params={"page_size": 5})
    page = first.json()
    assert len(page["items"]) == 5 and page["next_page_token"]


def test_final_checkpoint_downloads_and_loads_in_the_engine(
    client: Client, finetuned: dict[str, Any], tmp_path: Path
):
    from noisefa.engine.checkpoint import model_from_checkpoint

    names = {a["name"] for a in client.artifacts(finetuned["id"])}
    final = finetuned["result"]["final_checkpoint"]
    assert {final, "result.json", "metrics.jsonl"} <= names
    path = client.download(finetuned["id"], final, tmp_path)
    model = model_from_checkpoint(path)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_event_stream_delivers_epochs_in_order(client: Client, finetuned: dict[str, Any]):
    events = list(client.events(finetuned["id"]))
    states = [e["data"]["state"] for e in events if e["event"] == "state"]
    assert states[-1] == "succeeded" and "running" in states
    epochs = [e["data"]["epoch"] for e in events if e["event"] == "metrics"]
    assert epochs == [0, 1, 2]
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids)


def test_missing_dataset_fails_with_reason_and_message(client: Client):
    job = client.submit(train_spec(train={"dataset": "mnist", "epochs": 1}))
    job = client.wait(job["id"], timeout=JOB_TIMEOUT_S)
    assert job["state"] == "failed"
    assert job["error"]["reason"] == "dataset_unavailable"
    assert "mnist" in job["error"]["message"]
    assert "Traceback" not in job["error"]["message"]


def test_cancel_stops_a_running_job_and_keeps_its_checkpoint(client: Client):
    long_pretrain = {
        **PRETRAIN,
        "pretrain": {"dataset": "digits", "epochs": 3, "samples_per_epoch": 5_000_000},
    }
    job = client.submit(long_pretrain)

    deadline = time.monotonic() + JOB_TIMEOUT_S
    running = client.get(job["id"])
    while not (running.get("progress") or {}).get("step"):
        assert running["state"] in ("queued", "running"), running
        assert time.monotonic() < deadline, f"no progress within {JOB_TIMEOUT_S}s: {running}"
        time.sleep(0.2)
        running = client.get(job["id"])
    assert running["state"] == "running"
    assert running["progress"]["phase"] == "pretrain"
    client.cancel(job["id"])
    ended = client.wait(job["id"], timeout=60)
    assert ended["state"] == "cancelled"
    assert ended["state"] in TERMINAL_STATES
    names = [a["name"] for a in client.artifacts(job["id"])]
    assert any(name.startswith("checkpoints/") for name in names), names
