"""A real production-shaped stack per test module (``noisefa/testing/stack.py``): a fresh
Postgres database (migrated), a Redis database of its own (flushed), local object storage in
a temporary folder, one ``noisefa worker`` and one ``noisefa serve --no-worker`` subprocess."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from noisefa.client import Client
from noisefa.testing.stack import Stack, local_stack

# Not the service tests' DB 14: a worker consuming another suite's queue would eat its jobs.
REDIS_URL = os.environ.get("NOISEFA_TEST_WORKER_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    fast = {"heartbeat_interval_s": "1", "cancel_poll_s": "0.2"}
    with local_stack(root, name="noisefa_worker", broker_url=REDIS_URL, **fast) as stack:
        stack.start_worker()
        yield stack


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[Client]:
    with Client(stack.api_url, stack.api_key, retries=0) as client:
        yield client
