"""Helpers of the experiments tests: submit and wait over HTTP, and small job bodies."""

from __future__ import annotations

import time
from typing import Any

import httpx

MAX_UPLOAD_BYTES = 200_000
JOB_DEADLINE_S = 180.0
TERMINAL = {"succeeded", "failed", "cancelled"}


def submit(http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def wait_job(
    http: httpx.Client, job_id: str, states: set[str] = TERMINAL, deadline_s: float = JOB_DEADLINE_S
) -> dict[str, Any]:
    """Poll ``GET /v1/jobs/{id}`` until the job is in one of ``states``."""
    deadline = time.monotonic() + deadline_s
    while True:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in states:
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {job['state']} after {deadline_s:.0f}s")
        time.sleep(0.25)


def children(http: httpx.Client, parent_id: str) -> list[dict[str, Any]]:
    response = http.get("/v1/jobs", params={"parent_id": parent_id, "page_size": 100})
    assert response.status_code == 200, response.text
    return response.json()["items"]
