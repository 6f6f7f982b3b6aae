"""A real production-shaped stack per test module (``noisefa/testing/stack.py``): a fresh
Postgres database (migrated), a Redis database of its own (flushed), local object storage in
a temporary folder, one ``noisefa worker`` and one ``noisefa serve --no-worker`` subprocess."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from noisefa.client import Client
from noisefa.testing.redis_dbs import redis_url
from noisefa.testing.stack import Stack, local_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("stack")
    (root / "served").mkdir()  # the one server folder jobs may name npz:<path> files in
    fast = {"heartbeat_interval_s": "1", "cancel_poll_s": "0.2"}
    fast["server_data_roots"] = str(root / "served")
    with local_stack(root, name="noisefa_worker", broker_url=redis_url("worker"), **fast) as stack:
        stack.start_worker()
        yield stack


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[Client]:
    with Client(stack.api_url, stack.api_key, retries=0) as client:
        yield client
