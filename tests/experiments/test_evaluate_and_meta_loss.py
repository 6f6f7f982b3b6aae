"""Evaluate jobs and meta-loss through the real stack: a finished run's checkpoint under
rotations, and a train job recording its adaptability."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from noisefa.testing.jobs_http import submit, wait_job
from noisefa.testing.specs import train_body


@pytest.fixture(scope="module")
def trained(http: httpx.Client) -> dict[str, Any]:
    body = train_body(model={"hidden": [100], "seed": 0, "rule": "bp"})
    body["train"]["epochs"] = 3
    body["checkpoint_every"] = 3
    return wait_job(http, submit(http, body)["id"])


def final_test_accuracy(http: httpx.Client, job_id: str) -> float:
    points = http.get(
        f"/v1/jobs/{job_id}/metrics",
        params={"name": "test_accuracy", "phase": "train", "page_size": 100},
    ).json()["items"]
    return max(points, key=lambda p: p["epoch"])["value"]


def test_rotation_accuracy_starts_at_test_accuracy_and_falls(http: httpx.Client, trained):
    assert trained["state"] == "succeeded", trained.get("error")
    body = {
        "kind": "evaluate",
        "init_from": trained["id"],
        "datasets": ["digits"],
        "shifts": {"rotate": [0, 30, 60, 90]},
        "device": "cpu",
    }
    done = wait_job(http, submit(http, body)["id"])
    assert done["state"] == "succeeded", done.get("error")
    cells = {e["severity"]: e["accuracy"] for e in done["result"]["evaluations"]}
    assert cells[0] == pytest.approx(final_test_accuracy(http, trained["id"]), abs=1e-6)
    assert cells[0] > cells[30] > cells[90]
    names = {a["name"] for a in http.get(f"/v1/jobs/{done['id']}/artifacts").json()["items"]}
    assert {"result.json", "accuracy_vs_severity.png", "reliability.png"} <= names
    assert done["result"]["calibration"]["plot"] == "reliability.png"
    assert all(0.0 <= e["ood_auroc"] <= 1.0 for e in done["result"]["evaluations"])


def test_evaluate_needs_a_succeeded_job_of_the_project(http: httpx.Client):
    body = {"kind": "evaluate", "init_from": "0" * 32, "datasets": ["digits"]}
    response = http.post("/v1/jobs", json=body)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "init_from" in response.json()["detail"]


def test_meta_loss_is_recorded_and_finite(http: httpx.Client):
    body = train_body()
    body["train"]["epochs"] = 1
    body["train"]["meta_loss"] = {"tasks": ["digits"], "steps": 5, "every": 1, "eval_size": 256}
    done = wait_job(http, submit(http, body)["id"])
    assert done["state"] == "succeeded", done.get("error")
    points = http.get(
        f"/v1/jobs/{done['id']}/metrics", params={"name": "meta_loss", "page_size": 100}
    ).json()["items"]
    assert [p["epoch"] for p in points] == [0, 1]
    assert all(math.isfinite(p["value"]) and p["value"] > 0 for p in points)
