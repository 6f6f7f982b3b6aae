"""A running noisefa for the client tests, in both deployment modes.

``embedded``: ``noisefa serve`` with only ``NOISEFA_HOME`` set (SQLite, local files, the
serverless broker, one worker child). ``postgres``: the production shape — a fresh Postgres
database, Redis DB 10, local object storage, ``noisefa serve --no-worker`` and one
``noisefa worker`` subprocess.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from noisefa.commands.processes import stop_process
from noisefa.testing.embedded import start_server
from noisefa.testing.stack import local_stack

REDIS_URL = "redis://127.0.0.1:6379/10"


@dataclass(frozen=True)
class Service:
    """Where a running service answers, and a key of one of its projects."""

    url: str
    api_key: str


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def service(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp(request.param)
    if request.param == "embedded":
        server = start_server(root / "home", root / "serve.log")
        try:
            yield Service(server.url, (root / "home" / "api_key").read_text().strip())
        finally:
            stop_process(server.process, sig=signal.SIGINT)
        return
    fast_cancel = {"cancel_poll_s": "0.2"}
    with local_stack(root, name="noisefa_client", broker_url=REDIS_URL, **fast_cancel) as stack:
        stack.start_worker()
        yield Service(stack.api_url, stack.api_key)


@pytest.fixture
def spec_file(tmp_path: Path):
    """Write a spec to a JSON file and return its path."""
    import json

    def write(spec: dict, name: str = "spec.json") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(spec))
        return path

    return write
