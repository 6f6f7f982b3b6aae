"""Helpers of the experiments tests: submit and wait over HTTP, and small job bodies."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import httpx

from noisefa.engine.contract.states import TERMINAL_STATES
from noisefa.testing.waiting import wait_for

MAX_UPLOAD_BYTES = 200_000
JOB_DEADLINE_S = 180.0


def submit(http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def wait_job(
    http: httpx.Client,
    job_id: str,
    states: Collection[str] = TERMINAL_STATES,
    deadline_s: float = JOB_DEADLINE_S,
) -> dict[str, Any]:
    """Poll ``GET /v1/jobs/{id}`` until the job is in one of ``states``."""

    def job() -> dict[str, Any]:
        return http.get(f"/v1/jobs/{job_id}").json()

    return wait_for(
        lambda: (seen := job())["state"] in states and seen,
        deadline_s,
        lambda: f"job {job_id} to reach {sorted(states)} (it is {job()['state']})",
        poll_s=0.25,
    )


def children(http: httpx.Client, parent_id: str) -> list[dict[str, Any]]:
    response = http.get("/v1/jobs", params={"parent_id": parent_id, "page_size": 100})
    assert response.status_code == 200, response.text
    return response.json()["items"]
