"""Which Redis database each test suite and the benchmarks use: one registry, so no two
suites share a database.

Each suite that starts a worker needs a database of its own: a worker consuming another
suite's queue would eat its jobs, and each suite flushes its database freely. Some suites
honour an environment variable naming a whole broker URL instead.
"""

from __future__ import annotations

import os
from typing import Literal, NamedTuple

Suite = Literal["default", "worker", "experiments", "faults", "client", "fuzz", "benchmarks"]
REDIS_SERVER = "redis://127.0.0.1:6379"


class RedisDb(NamedTuple):
    """A suite's database number, and the variable that may override its whole URL."""

    number: int
    env_override: str | None = None


REDIS_DBS: dict[Suite, RedisDb] = {
    # The service tests (no worker) and every harness default.
    "default": RedisDb(14, "NOISEFA_TEST_REDIS_URL"),
    "worker": RedisDb(15, "NOISEFA_TEST_WORKER_REDIS_URL"),
    "experiments": RedisDb(11, "NOISEFA_TEST_EXPERIMENTS_REDIS"),
    "faults": RedisDb(12, "NOISEFA_TEST_FAULTS_REDIS"),
    # The client and CLI tests share one: they run one stack at a time.
    "client": RedisDb(10),
    # Fuzzed jobs must never reach another suite's worker.
    "fuzz": RedisDb(9),
    "benchmarks": RedisDb(8),
}


def redis_url(suite: Suite) -> str:
    """The broker URL of ``suite``: its override from the environment, else its database."""
    number, env_override = REDIS_DBS[suite]
    if env_override and (url := os.environ.get(env_override)):
        return url
    return f"{REDIS_SERVER}/{number}"
