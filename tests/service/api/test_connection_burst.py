"""A burst of authenticated requests larger than the connection pool never hangs the API.

FastAPI runs each dependency in its own threadpool step. A request that kept its database
connection while it waited for a thread, with every thread waiting for a connection, used to
deadlock the process until the pool timed out. With a pool of one connection and 40 threads,
a burst of 60 concurrent requests must all be answered: 200, or at worst a 503 problem
(`busy`, with `Retry-After`), never a hang, a 500 or a dropped connection.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from noisefa.service.app import create_app
from noisefa.testing.db import migrated, new_project_key, settings_for
from noisefa.testing.http import serve_in_thread
from noisefa.testing.specs import pretrain_spec

BURST = 60
DEADLINE_S = 60.0  # a deadlocked pool would hold every request far past this


@pytest.fixture(scope="module")
def tiny_pool_api(postgres_url, tmp_path_factory):
    """The API on Postgres with one pooled connection and no overflow, served by uvicorn."""
    home = tmp_path_factory.mktemp("burst")
    settings = migrated(
        settings_for(
            home,
            database_url=postgres_url,
            reaper_enabled=False,
            db_pool_size=1,
            db_max_overflow=0,
            db_pool_timeout_s=20.0,
        )
    )
    key = new_project_key(settings)
    with serve_in_thread(create_app(settings)) as url:
        yield url, {"Authorization": f"Bearer {key}"}


async def _burst(url: str, paths: list[str], headers: dict[str, str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits) as client:
        return await asyncio.wait_for(
            asyncio.gather(*(client.get(path, timeout=DEADLINE_S) for path in paths)),
            DEADLINE_S,
        )


def test_burst_beyond_the_pool_is_answered_not_deadlocked(tiny_pool_api):
    url, headers = tiny_pool_api
    job = httpx.post(f"{url}/v1/jobs", json=pretrain_spec(), headers=headers, timeout=30)
    assert job.status_code == 202, job.text
    job_id = job.json()["id"]
    paths = [f"/v1/jobs/{job_id}" if i % 2 else "/v1/jobs" for i in range(BURST)]

    responses = asyncio.run(_burst(url, paths, headers))

    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= BURST // 2, statuses
    for response in responses:
        if response.status_code == 503:
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.headers["retry-after"] == "1"
