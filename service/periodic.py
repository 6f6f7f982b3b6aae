"""A function run every few seconds on a daemon thread until stopped: the API's background
loops (the reaper, the webhook dispatcher) in one shape."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class PeriodicLoop:
    """``run()`` at once, then every ``interval_s``, on a daemon thread, until :meth:`stop`.

    An exception from ``run`` (a database outage, say) is logged and the loop goes on: the
    next round tries again.
    """

    def __init__(self, name: str, run: Callable[[], object], interval_s: float) -> None:
        self.name = name
        self.interval_s = interval_s
        self._run = run
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"noisefa-{name}", daemon=True)

    def start(self) -> None:
        """Start the loop (its first round runs at once)."""
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the current round."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._run()
            except Exception:
                log.warning(
                    "%s: round failed; retrying in %gs", self.name, self.interval_s, exc_info=True
                )
            self._stop.wait(self.interval_s)
