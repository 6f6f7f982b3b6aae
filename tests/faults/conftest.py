"""The fault-injection tests' stack: a fresh Postgres database, Redis database 12 (flushed),
local object storage in a temporary folder, and the API as a subprocess whose reaper runs with
a heartbeat timeout of a few seconds. Tests start (and kill) ``noisefa worker`` processes.

Everything is loopback; every wait has a deadline.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.stack import Stack, local_stack

__all__ = ["FULL", "Stack", "pretrain_spec"]

FULL = os.environ.get("NOISEFA_FULL") == "1"
# Our own Redis database: no other suite's worker consumes it, and we flush it freely.
REDIS_URL = os.environ.get("NOISEFA_TEST_FAULTS_REDIS", "redis://127.0.0.1:6379/12")
HEARTBEAT_TIMEOUT_S = 4.0
# A job queued this long without starting is sent again (covers messages a Redis restart lost).
REQUEUE_AFTER_S = 10.0
TINY_METRICS = {"probe_size": 8, "readout_size": 8}


def pretrain_spec(
    *, epochs: int = 1, samples: int = 64, hidden: int = 4, seed: int = 0
) -> dict[str, Any]:
    """A noise-pretraining job shaped like ``digits`` on the CPU, checkpointed every epoch."""
    return {
        "kind": "pretrain",
        "model": {"hidden": [hidden], "seed": seed},
        "pretrain": {
            "dataset": "digits",
            "epochs": epochs,
            "samples_per_epoch": samples,
            "batch_size": 64,
        },
        "device": "cpu",
        "metrics": TINY_METRICS,
    }


# A fault stack: fast heartbeats, a reaper that notices within seconds, no job quota.
FAULT_SETTINGS = {
    "heartbeat_interval_s": "0.5",
    "heartbeat_timeout_s": str(HEARTBEAT_TIMEOUT_S),
    "reaper_interval_s": "0.5",
    "requeue_after_s": str(REQUEUE_AFTER_S),
    "cancel_poll_s": "0.2",
    "max_concurrent_jobs": "100000",
    "max_attempts": "3",
}


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for every fault test (each start costs seconds): database, broker, storage
    and the API. Each module says how many workers it needs (``stack.use_workers``)."""
    root = tmp_path_factory.mktemp("faults")
    with local_stack(root, name="noisefa_faults", broker_url=REDIS_URL, **FAULT_SETTINGS) as stack:
        yield stack
