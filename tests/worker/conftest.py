"""A real production-shaped stack per test module (``tests/support/stack.py``): a fresh
Postgres database (migrated), a Redis database of its own (flushed), local object storage in
a temporary folder, one ``noisefa worker`` and one ``noisefa serve --no-worker`` subprocess."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from noisefa.client import Client
from tests.support import broker
from tests.support.db import postgres_database
from tests.support.stack import Stack, make_stack

# Not the service tests' DB 14: a worker consuming another suite's queue would eat its jobs.
REDIS_URL = os.environ.get("NOISEFA_TEST_WORKER_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    (root / "data").mkdir()  # empty: torchvision sets are "unavailable"
    broker.flush(REDIS_URL)
    with postgres_database("noisefa_worker") as db_url:
        values = {
            "home": str(root / "home"),
            "database_url": db_url,
            "broker_url": REDIS_URL,
            "storage_url": (root / "objects").as_uri(),
            "work_dir": str(root / "work"),
            "data_dir": str(root / "data"),
            "heartbeat_interval_s": "1",
            "cancel_poll_s": "0.2",
        }
        stack, cleanup = make_stack(root, values)
        try:
            stack.start_worker()
            yield stack
        finally:
            cleanup()


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[Client]:
    with Client(stack.api_url, stack.api_key, retries=0) as client:
        yield client
