"""A checkpoint trained locally, used by the service (embedded and Postgres/Redis, real
workers): ``noisefa submit`` with its path in ``init_from`` uploads it and the train job
starts from exactly its weights; an evaluate job of the upload scores what the local run
measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from noisefa.client import Client
from noisefa.testing.checkpoint_files import read_checkpoint, trained_checkpoint
from noisefa.testing.specs import SMALL_METRICS

WAIT_S = 180
# Measured from the weights alone: equal weights give equal values (float32 sums may differ
# in the last bits between processes).
WEIGHT_METRICS = ("alignment_angle/1", "alignment_angle/2", "eff_dim/1", "eff_dim/2")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return trained_checkpoint(tmp_path_factory.mktemp("local-run"))


@pytest.fixture(scope="module")
def local_final(checkpoint) -> dict[str, float]:
    """The local run's metrics after its last epoch (the checkpoint's weights)."""
    _, meta = read_checkpoint(checkpoint)
    last = meta["progress"]["epoch"]
    return {
        p["name"]: p["value"]
        for p in meta["progress"]["history"]
        if p["phase"] == "train" and p["epoch"] == last
    }


@pytest.fixture(scope="module")
def client(service):
    with Client(service.url, service.api_key) as client:
        yield client


def submit(service, spec_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOISEFA_")}
    env.update(NOISEFA_URL=service.url, NOISEFA_API_KEY=service.api_key, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "noisefa.cli", "submit", str(spec_path), "--wait", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )


def test_submit_uploads_a_local_checkpoint_and_trains_from_its_weights(
    service, client, checkpoint, local_final, tmp_path
):
    spec = {
        "kind": "train",
        "model": {"hidden": [8], "seed": 5},  # another seed: the weights must come from init_from
        "train": {"dataset": "digits", "epochs": 1},
        "device": "cpu",
        "metrics": dict(SMALL_METRICS),
        "init_from": str(checkpoint),
    }
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    done = submit(service, path)
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert job["state"] == "succeeded", job.get("error")
    uploaded = job["spec"]["init_from"]
    assert uploaded.startswith("checkpoint:")
    assert uploaded in {c["name"] for c in client.checkpoints()}
    start = {
        p["name"]: p["value"] for p in client.metrics(job["id"], phase="train") if p["epoch"] == 0
    }
    for name in WEIGHT_METRICS:
        assert start[name] == pytest.approx(local_final[name], rel=1e-5, abs=1e-5), name


def test_an_evaluate_job_scores_an_uploaded_checkpoint_as_the_local_run_did(
    client, checkpoint, local_final
):
    record = client.upload_checkpoint(checkpoint)
    job = client.submit(
        {"kind": "evaluate", "init_from": record["name"], "shifts": {"rotate": [0]}}
    )
    done = client.wait(job["id"], timeout=WAIT_S)
    assert done["state"] == "succeeded", done.get("error")
    (cell,) = done["result"]["evaluations"]  # the default: the built-in it trained on
    assert cell["dataset"] == "digits"
    assert cell["accuracy"] == pytest.approx(local_final["test_accuracy"], abs=1e-9)
    assert done["result"]["checkpoint"] == {"checkpoint_id": record["id"]}
    assert "reliability.png" in done["result"]["artifacts"]
