"""Child processes of the CLI (``serve``'s worker, ``demo``'s embedded server), each in its
own process group so a terminal's Ctrl-C reaches only the parent, which stops them in order.

Also used by the end-to-end tests, which start the same commands the same way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import IO

import httpx


def spawn_noisefa(
    args: list[str],
    *,
    env: Mapping[str, str] | None = None,
    stdout: int | IO[bytes] | None = None,
    stderr: int | IO[bytes] | None = None,
) -> subprocess.Popen:
    """``noisefa ARGS`` with this interpreter, in a new process group (session)."""
    return subprocess.Popen(
        [sys.executable, "-m", "noisefa.cli", *args],
        env=None if env is None else dict(env),
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )


def stop_process(
    process: subprocess.Popen, *, sig: int = signal.SIGTERM, timeout_s: float = 15.0
) -> int:
    """Send ``sig``, wait up to ``timeout_s``, then SIGKILL its whole group; the exit code.

    The group is killed in every case, so no grandchild (a pool child) outlives its parent.
    """
    if process.poll() is None:
        process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=timeout_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    return process.wait()


def describe_exit(returncode: int) -> str:
    """``exited with status 1`` or ``was killed by SIGKILL``, for a log line."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str) -> bool:
    """Whether a noisefa API answers ``GET /healthz`` at ``url``."""
    try:
        return httpx.get(f"{url.rstrip('/')}/healthz", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until_answers(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    """Wait for ``/healthz``; RuntimeError if the process exits, TimeoutError after the limit."""
    deadline = time.monotonic() + timeout_s
    while not answers(url):
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer at {url} within {timeout_s:.0f}s")
        time.sleep(0.2)
