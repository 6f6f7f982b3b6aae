"""Jobs through the real stack: HTTP API → Postgres + Redis → Celery worker → engine →
metrics, events and checkpoints back through the API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from noisefa.client import TERMINAL_STATES, ApiError, Client
from noisefa.engine.contract.bodies import parse_job
from noisefa.service.broker import enqueue_job, make_celery
from noisefa.service.repositories.jobs import create_job
from noisefa.service.repositories.projects import project_for_key
from noisefa.testing.npz_files import small_npz_bytes
from noisefa.testing.specs import SMALL_METRICS, cpu_pretrain_spec, train_body
from noisefa.testing.stack import Stack
from noisefa.testing.waiting import wait_for

JOB_TIMEOUT_S = 180.0

PRETRAIN = cpu_pretrain_spec(epochs=2, samples=2048, hidden=16, metrics=SMALL_METRICS)


def train_spec(**overrides: Any) -> dict[str, Any]:
    """A digits run of the same [16] MLP as ``PRETRAIN``, checkpointed every epoch."""
    return train_body(model={"hidden": [16], "seed": 0}, checkpoint_every=1, **overrides)


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


def test_a_builtin_no_live_worker_holds_is_refused_at_submit(client: Client):
    with pytest.raises(ApiError) as refused:
        client.submit(train_spec(train={"dataset": "mnist", "epochs": 1}))
    assert refused.value.status == 422
    assert [e["field"] for e in refused.value.problem["errors"]] == ["train.dataset"]


def test_a_bad_server_file_fails_with_reason_and_no_server_folder(client: Client, stack: Stack):
    bad = stack.root / "served" / "bad.npz"
    bad.write_bytes(small_npz_bytes()[:-40])  # truncated: its zip directory is cut off
    job = client.submit(train_spec(train={"dataset": f"npz:{bad}", "epochs": 1}))
    job = client.wait(job["id"], timeout=JOB_TIMEOUT_S)
    assert (job["state"], job["error"]["reason"]) == ("failed", "dataset_unavailable")
    message = job["error"]["message"]
    assert "not a valid .npz" in message and "Traceback" not in message
    assert str(stack.settings.resolved_work_dir) not in message


def test_the_worker_rechecks_a_stored_server_file_before_reading_it(stack: Stack):
    """A job stored without the API's check (as under older settings) naming a readable file
    outside the allowed folder fails instead of training on it."""
    outside = stack.root / "outside.npz"
    outside.write_bytes(small_npz_bytes())
    spec = parse_job(train_spec(train={"dataset": f"npz:{outside}", "epochs": 1}), None)
    with stack.sessions() as session:
        project = project_for_key(session, stack.api_key)
        job = create_job(session, project.id, spec, max_attempts=1)
        job_id, queue = job.id, job.queue
    enqueue_job(make_celery(stack.settings), job_id, queue)
    done = stack.wait_state(job_id, TERMINAL_STATES, JOB_TIMEOUT_S)
    assert (done.state, done.error_reason) == ("failed", "dataset_unavailable")
    assert "not inside a server folder" in done.error_message


def test_cancel_stops_a_running_job_and_keeps_its_checkpoint(client: Client):
    long_pretrain = {
        **PRETRAIN,
        "pretrain": {"dataset": "digits", "epochs": 3, "samples_per_epoch": 5_000_000},
    }
    job = client.submit(long_pretrain)

    def training() -> dict | None:
        seen = client.get(job["id"])
        if (seen.get("progress") or {}).get("step"):
            return seen
        assert seen["state"] in ("queued", "running"), seen
        return None

    running = wait_for(
        training, JOB_TIMEOUT_S, lambda: f"the job to make progress: {client.get(job['id'])}"
    )
    assert running["state"] == "running"
    assert running["progress"]["phase"] == "pretrain"
    client.cancel(job["id"])
    ended = client.wait(job["id"], timeout=60)
    assert ended["state"] == "cancelled"
    assert ended["state"] in TERMINAL_STATES
    names = [a["name"] for a in client.artifacts(job["id"])]
    assert any(name.startswith("checkpoints/") for name in names), names
