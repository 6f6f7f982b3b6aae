"""Serve an ASGI app with uvicorn on a free loopback port, in a thread, for real-socket tests.

Usage::

    with serve_in_thread(app) as base_url:
        httpx.get(f"{base_url}/healthz")
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from noisefa.testing.waiting import wait_for

STARTUP_DEADLINE_S = 20.0


@contextmanager
def serve_in_thread(app, host: str = "127.0.0.1") -> Iterator[str]:
    """Run ``app`` until the block ends; yields ``http://host:port``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()

    def started() -> bool:
        if not thread.is_alive():
            raise RuntimeError("uvicorn exited before it started")
        return server.started

    wait_for(started, STARTUP_DEADLINE_S, "uvicorn to start", poll_s=0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
