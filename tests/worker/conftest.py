"""A real production-shaped stack per test module (``noisefa/testing/stack.py``): a fresh
Postgres database (migrated), a Redis database of its own (flushed), local object storage in
a temporary folder, one ``noisefa worker`` and one ``noisefa serve --no-worker`` subprocess.
For the tests that run a worker's code in this process: settings of a migrated SQLite
database and local storage in the test's folder, and sessions of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from noisefa.client import Client
from noisefa.service.db import engine_from_settings, make_sessionmaker
from noisefa.service.settings import Settings
from noisefa.testing.db import migrated, settings_for
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


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A migrated SQLite database and local storage in the test's folder (a module that needs
    other settings defines its own)."""
    return migrated(settings_for(tmp_path))


@pytest.fixture
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    engine = engine_from_settings(settings)
    yield make_sessionmaker(engine)
    engine.dispose()
