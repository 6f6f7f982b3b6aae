"""Helpers of the end-to-end tests: an embedded ``noisefa serve`` subprocess and its children."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from noisefa.commands.processes import free_port, spawn_noisefa, stop_process, wait_until_answers

START_TIMEOUT_S = 120.0


@dataclass
class Server:
    """A running ``noisefa serve`` and where its state and output are."""

    url: str
    home: Path
    process: subprocess.Popen
    log: Path


def start_server(home: Path, log: Path) -> Server:
    """``noisefa serve`` with only ``NOISEFA_HOME`` set (the embedded default), once it answers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOISEFA_")}
    env["NOISEFA_HOME"] = str(home)
    env.setdefault("OMP_NUM_THREADS", "1")  # see noisefa/testing/stack.py: stack_env
    port = free_port()
    with log.open("ab") as out:
        process = spawn_noisefa(
            ["serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_answers(url, process, START_TIMEOUT_S)
    except (RuntimeError, TimeoutError) as exc:
        stop_process(process, sig=signal.SIGINT)
        raise RuntimeError(f"{exc}; its log:\n{log.read_text()[-3000:]}") from exc
    return Server(url, home, process, log)


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def gone(pid: int) -> bool:
    """Whether ``pid`` has exited."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers kill(0); it has exited all the same.
    status = Path(f"/proc/{pid}/status")
    return not status.exists() or "zombie" in status.read_text()
