"""The fault-injection tests' stack: a fresh Postgres database, its own Redis database (flushed),
local object storage in a temporary folder, and the API as a subprocess whose reaper runs with
a heartbeat timeout of a few seconds. Tests start (and kill) ``noisefa worker`` processes.

Everything is loopback; every wait has a deadline.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from noisefa.testing.faults import FAULT_SETTINGS
from noisefa.testing.redis_dbs import redis_url
from noisefa.testing.stack import Stack, local_stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for every fault test (each start costs seconds): database, broker, storage
    and the API. Each module says how many workers it needs (``stack.use_workers``)."""
    root = tmp_path_factory.mktemp("faults")
    broker_url = redis_url("faults")
    with local_stack(root, name="noisefa_faults", broker_url=broker_url, **FAULT_SETTINGS) as stack:
        yield stack
