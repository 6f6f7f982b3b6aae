"""Run one function in several threads at once, for the tests of races (claims, cancels,
duplicate submits): every thread is joined within a deadline, so a hung one fails the test
instead of hanging it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def run_threads(target: Callable[[], None], count: int, deadline_s: float) -> None:
    """Start ``count`` threads running ``target`` and wait until all have ended.

    ``target`` lines the threads up itself where the race should start (a
    ``threading.Barrier(count)``), after whatever each needs first (a connection, a session).
    Raises ``TimeoutError`` if any thread is still running after ``deadline_s``.
    """
    threads = [threading.Thread(target=target, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + deadline_s
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    if alive := sum(thread.is_alive() for thread in threads):
        raise TimeoutError(f"{alive} of {count} threads still running after {deadline_s:.0f}s")
