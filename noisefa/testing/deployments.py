"""A running noisefa in either deployment mode, for the tests that talk to it as a user would
(the Python client and the CLI verbs), so both suites test the same two shapes.

``embedded``: ``noisefa serve`` with only ``NOISEFA_HOME`` set (SQLite, local files, the
serverless broker, one worker child). ``postgres``: the production shape — a fresh Postgres
database, the client suite's Redis database, local object storage, ``noisefa serve
--no-worker`` and one ``noisefa worker`` subprocess.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from noisefa.commands.processes import stop_process
from noisefa.testing.embedded import start_server
from noisefa.testing.redis_dbs import redis_url
from noisefa.testing.stack import local_stack

DeploymentMode = Literal["embedded", "postgres"]
DEPLOYMENT_MODES: tuple[DeploymentMode, ...] = ("embedded", "postgres")


@dataclass(frozen=True)
class Service:
    """Where a running service answers, and a key of one of its projects."""

    url: str
    api_key: str


@contextmanager
def running_service(mode: DeploymentMode, root: Path) -> Iterator[Service]:
    """Start noisefa in ``mode`` under ``root``; yield where it answers; stop it."""
    if mode == "embedded":
        server = start_server(root / "home", root / "serve.log")
        try:
            yield Service(server.url, (root / "home" / "api_key").read_text().strip())
        finally:
            stop_process(server.process, sig=signal.SIGINT)
        return
    fast_cancel = {"cancel_poll_s": "0.2"}
    broker_url = redis_url("client")
    with local_stack(root, name="noisefa_client", broker_url=broker_url, **fast_cancel) as stack:
        stack.start_worker()
        yield Service(stack.api_url, stack.api_key)
