"""Wait for a condition with a deadline: the one polling loop of the tests, the harness and the
benchmarks, so no wait can hang and every timeout says what it waited for."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    condition: Callable[[], Any],
    deadline_s: float,
    what: str | Callable[[], str],
    poll_s: float = 0.2,
) -> Any:
    """Poll ``condition`` until it returns something truthy, and return that.

    Raises ``TimeoutError`` once ``deadline_s`` has passed, naming ``what`` was awaited; a
    callable ``what`` is called then, so the message can tell the state things were left in.
    An exception from ``condition`` ends the wait at once (a condition that can no longer
    come true should say so rather than time out).
    """
    deadline = time.monotonic() + deadline_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            awaited = what() if callable(what) else what
            raise TimeoutError(f"timed out after {deadline_s:.0f}s waiting for {awaited}")
        time.sleep(poll_s)
