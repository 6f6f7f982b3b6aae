"""The embedded worker's transport: kombu's filesystem transport, drained in short waits.

Celery drives a transport without an event loop (this one) with a loop that drains the
broker for up to 2 s at a time and reads its shutdown flag only between drains, then
drains once more on the way out. An idle embedded worker therefore took ~4 s to begin a
warm shutdown, and every ``noisefa serve`` and ``demo`` waited for it. Capping each drain
at :data:`DRAIN_WAIT_S` lets the loop see the flag within a fraction of a second; messages
are still found by the folder poll (``polling_interval``) as before.

Only the worker uses it (:func:`worker_transport`): the cap would also cut short a caller
that waits on the broker for a reply (``SimpleQueue.get(timeout=...)``, remote-control
replies), which the API does not, but should not have to know about.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import filesystem

from .settings import Settings

DRAIN_WAIT_S = 0.25
TRANSPORT = f"{__name__}:Transport"  # how Celery's broker_transport names it (kombu resolves it)


class Transport(filesystem.Transport):
    """kombu's filesystem transport; each drain waits at most :data:`DRAIN_WAIT_S`."""

    def drain_events(self, connection: Any, timeout: float | None = None) -> None:
        """Drain as kombu does, for the shorter of ``timeout`` and :data:`DRAIN_WAIT_S`
        (a timeout still ends in ``socket.timeout``, which Celery's loop expects)."""
        if timeout is not None:
            timeout = min(timeout, DRAIN_WAIT_S)
        return super().drain_events(connection, timeout=timeout)


def worker_transport(settings: Settings) -> dict[str, str]:
    """The worker's Celery config for its transport: this one in the embedded mode, else
    nothing (Redis's own transport, whose event loop sees a shutdown at once)."""
    return {"broker_transport": TRANSPORT} if settings.embedded else {}
