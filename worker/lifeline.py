"""Tie a worker to the process that started it, so it never trains on as an orphan.

``noisefa serve`` starts its worker with ``--parent-pid``; when ``serve`` dies, even by
SIGKILL (which runs none of its cleanup), the worker must die too, and with it the pool
child running a job (the job resumes from its last checkpoint under the next ``serve``).
Two guards:

- on Linux, ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills this process when its
  parent exits;
- everywhere, a watchdog thread that sees the parent pid change and kills this process's
  group (``serve`` starts the worker as the leader of its own group, so the group is the
  worker and its pool).

Celery's prefork children carry ``PR_SET_PDEATHSIG=SIGKILL`` towards the worker themselves
(``celery.concurrency.prefork.process_initializer``), so they die with it on Linux; the
watchdog's group kill covers them elsewhere. A worker run on its own gets neither guard.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
WATCHDOG_INTERVAL_S = 1.0


def exit_with_parent(parent_pid: int) -> None:
    """Die (with this process group) when process ``parent_pid``, our parent, exits."""
    armed = _set_parent_death_signal()
    # The parent may have died before the signal was armed: then we were re-parented.
    if os.getppid() != parent_pid:
        log.error("parent process %d is already gone; exiting", parent_pid)
        _kill_own_group()
    threading.Thread(
        target=_watch, args=(parent_pid,), name="noisefa-parent-watchdog", daemon=True
    ).start()
    log.info(
        "bound to parent process %d (%s)",
        parent_pid,
        "kernel parent-death signal and watchdog" if armed else "watchdog",
    )


def _set_parent_death_signal() -> bool:
    """Ask Linux to SIGKILL this process when its parent exits; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: %s", os.strerror(ctypes.get_errno()))
        return False
    return True


def _watch(parent_pid: int) -> None:
    """Poll the parent pid; once it changed (the parent died), kill this group."""
    while os.getppid() == parent_pid:
        time.sleep(WATCHDOG_INTERVAL_S)
    log.error("parent process %d is gone; killing this worker and its pool", parent_pid)
    _kill_own_group()


def _kill_own_group() -> None:
    """SIGKILL this process's group when it leads it (pool children included), else itself."""
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
