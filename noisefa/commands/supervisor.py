"""Keep ``serve``'s worker child alive: restart it within seconds when it dies.

Without this, a worker killed by the OOM killer or by hand left the embedded service
taking jobs that nobody would run, while ``/readyz`` answered ok. The supervisor thread
starts the child, watches it, and starts a new one after a backoff (1 s, 2 s, 4 s …,
capped; back to 1 s once a child stayed up a while), logging each exit with its status.

The thread that starts the child is also the one that stops it: the child's parent-death
signal (``noisefa worker --parent-pid``) fires when the thread that forked it ends, so no
other thread may outlive it while the child runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .processes import describe_exit, stop_process

log = logging.getLogger(__name__)

POLL_S = 0.2


@dataclass
class Backoff:
    """Delays between restarts: doubling from ``first_s`` up to ``cap_s``, reset after a
    child that stayed up ``stable_after_s``."""

    first_s: float = 1.0
    cap_s: float = 30.0
    stable_after_s: float = 60.0
    _next_s: float = field(init=False)

    def __post_init__(self) -> None:
        self._next_s = self.first_s

    def delay_after(self, uptime_s: float) -> float:
        """The wait before the next start, for a child that died after ``uptime_s``."""
        if uptime_s >= self.stable_after_s:
            self._next_s = self.first_s
        delay = self._next_s
        self._next_s = min(2 * self._next_s, self.cap_s)
        return delay


class WorkerSupervisor:
    """Runs ``spawn()`` on a thread and runs it again whenever its process exits, until
    :meth:`stop`, which stops the current child (SIGTERM, SIGKILL after ``stop_timeout_s``)."""

    def __init__(
        self,
        spawn: Callable[[], subprocess.Popen],
        *,
        stop_timeout_s: float,
        backoff: Backoff | None = None,
    ) -> None:
        self.spawn = spawn
        self.stop_timeout_s = stop_timeout_s
        self.backoff = backoff or Backoff()
        self.restarts = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="noisefa-supervisor")

    def start(self) -> None:
        """Start the first child now (on the supervisor thread)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop restarting, stop the child, and wait for both."""
        self._stopping.set()
        self._thread.join(timeout=self.stop_timeout_s + 10)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                child = self.spawn()
            except OSError:
                log.exception("could not start the worker")
                ended = "did not start"
            else:
                log.info("worker started (pid %d)", child.pid)
                if self._watch(child):
                    return
                # Its pool children die with it; its group is killed too, to be sure.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(child.pid, signal.SIGKILL)
                ended = f"(pid {child.pid}) {describe_exit(child.returncode)}"
            uptime_s = time.monotonic() - started
            delay_s = self.backoff.delay_after(uptime_s)
            self.restarts += 1
            log.warning(
                "worker %s after %.0f s; restart %d in %g s",
                ended,
                uptime_s,
                self.restarts,
                delay_s,
            )
            self._stopping.wait(delay_s)

    def _watch(self, child: subprocess.Popen) -> bool:
        """Wait until the child exits (False) or we are stopping: then stop it (True)."""
        while child.poll() is None:
            if self._stopping.wait(POLL_S):
                log.info("stopping the worker (pid %d)", child.pid)
                stop_process(child, timeout_s=self.stop_timeout_s)
                return True
        return False
