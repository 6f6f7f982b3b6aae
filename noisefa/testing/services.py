"""Restart the local Redis and PostgreSQL servers, for fault-injection tests.

Both restarts disturb every other client of these servers (Redis keeps nothing on disk, so
every queued message is lost). Each function always brings its server back, waits for it
with a deadline, and raises if it does not answer in time.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from noisefa.testing.waiting import wait_for

REDIS_START = [
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    "/var/lib/redis",
    "--logfile",
    "/var/log/redis/ci.log",
]
READY_DEADLINE_S = 60.0


def _wait(command: list[str], what: str) -> None:
    wait_for(
        lambda: subprocess.run(command, capture_output=True).returncode == 0,
        READY_DEADLINE_S,
        f"{what} to answer",
    )


def redis_up() -> bool:
    """Whether Redis answers PING."""
    return subprocess.run(["redis-cli", "-p", "6379", "ping"], capture_output=True).returncode == 0


def restart_redis() -> None:
    """Shut Redis down without saving (all data lost, as on a crash), start it, wait for it."""
    try:
        subprocess.run(["redis-cli", "-p", "6379", "shutdown", "nosave"], capture_output=True)
        wait_for(lambda: not redis_up(), READY_DEADLINE_S, "Redis to shut down", poll_s=0.1)
    finally:
        if not redis_up():
            for folder in ("/var/lib/redis", "/var/log/redis"):
                Path(folder).mkdir(parents=True, exist_ok=True)
            subprocess.run(REDIS_START, check=False, capture_output=True)
        _wait(["redis-cli", "-p", "6379", "ping"], "Redis")


def _pg_version() -> str:
    return sorted(p.name for p in Path("/etc/postgresql").iterdir())[0]


def restart_postgres() -> None:
    """Restart PostgreSQL (fast mode: every connection is cut), then wait for it."""
    try:
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", _pg_version(), "main", "restart"],
            capture_output=True,
            timeout=READY_DEADLINE_S,
        )
    finally:
        if subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1"]).returncode != 0:
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", _pg_version(), "main", "start"],
                capture_output=True,
                timeout=READY_DEADLINE_S,
            )
        _wait(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"], "PostgreSQL")
