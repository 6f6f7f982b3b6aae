"""Helpers of the end-to-end tests: an embedded ``noisefa serve`` subprocess and its children."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from noisefa.commands.processes import free_port, spawn_noisefa, stop_process, wait_until_answers
from noisefa.testing.waiting import wait_for

START_TIMEOUT_S = 120.0


@dataclass
class Server:
    """A running ``noisefa serve`` and where its state and output are."""

    url: str
    home: Path
    process: subprocess.Popen
    log: Path


def embedded_env(home: Path, settings: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without any ``NOISEFA_*``, plus ``NOISEFA_HOME`` and ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOISEFA_")}
    env["NOISEFA_HOME"] = str(home)
    env.setdefault("OMP_NUM_THREADS", "1")  # see noisefa/testing/stack.py: stack_env
    env.setdefault("NOISEFA_TORCH_THREADS", "1")
    env.update(settings or {})
    return env


def start_server(
    home: Path,
    log: Path,
    *,
    args: Sequence[str] = (),
    settings: Mapping[str, str] | None = None,
) -> Server:
    """``noisefa serve ARGS`` with only ``NOISEFA_HOME`` set (the embedded default) plus any
    ``settings`` (``NOISEFA_*`` variables), once it answers."""
    env = embedded_env(home, settings)
    port = free_port()
    with log.open("ab") as out:
        process = spawn_noisefa(
            ["serve", "--port", str(port), *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(url, process, START_TIMEOUT_S)
    except (RuntimeError, TimeoutError) as exc:
        stop_process(process, sig=signal.SIGINT)
        raise RuntimeError(f"{exc}; its log:\n{log.read_text()[-3000:]}") from exc
    return Server(url, home, process, log)


def children(pid: int) -> list[int]:
    """Direct children of ``pid``, started by any of its threads (Linux /proc)."""
    found: list[int] = []
    for path in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):  # a thread that just ended
            found += [int(child) for child in path.read_text().split()]
    return sorted(found)


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); it has exited all the same.
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "zombie" in status.read_text()


def wait_gone(pids: list[int], deadline_s: float, what: str) -> None:
    """Until every process of ``pids`` has exited; ``what`` names them in the timeout."""
    wait_for(lambda: all(gone(pid) for pid in pids), deadline_s, what, poll_s=0.1)
