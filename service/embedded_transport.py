"""The embedded broker's transport: kombu's filesystem transport, drained in short waits.

Celery drives a transport without an event loop (this one) with a loop that drains the
broker for up to 2 s at a time and reads its shutdown flag only between drains, then
drains once more on the way out. An idle embedded worker therefore took ~4 s to begin a
warm shutdown, and every ``noisefa serve`` and ``demo`` waited for it. Capping each drain
at :data:`DRAIN_WAIT_S` lets the loop see the flag within a fraction of a second; messages
are still found by the folder poll (``polling_interval``) as before.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import filesystem

DRAIN_WAIT_S = 0.25
TRANSPORT = f"{__name__}:Transport"  # what the broker config names (kombu resolves it)


class Transport(filesystem.Transport):
    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        if timeout is not None:
            timeout = min(timeout, DRAIN_WAIT_S)
        return super().drain_events(connection, timeout=timeout)
