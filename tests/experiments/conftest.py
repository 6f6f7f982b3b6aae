"""The experiments tests' stack: a fresh Postgres database, its own Redis database (flushed),
local object storage in a temporary folder, the API as a subprocess and TWO ``noisefa
worker`` processes, so an experiment's runs really spread over workers.

Uploads are capped at a small ``max_upload_bytes`` so the size limit is cheap to hit.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from noisefa.testing.jobs_http import MAX_UPLOAD_BYTES
from noisefa.testing.redis_dbs import redis_url
from noisefa.testing.stack import Stack, local_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = {
        "heartbeat_interval_s": "1",
        "cancel_poll_s": "0.2",
        "reaper_interval_s": "1",
        "experiment_sweep_after_s": "5",
        "max_upload_bytes": str(MAX_UPLOAD_BYTES),
    }
    root = tmp_path_factory.mktemp("experiments")
    broker_url = redis_url("experiments")
    with local_stack(root, name="noisefa_experiments", broker_url=broker_url, **settings) as stack:
        stack.use_workers(2)
        yield stack


@pytest.fixture(scope="session")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with stack.http() as client:
        yield client
