"""Riding out a database blip: a write that loses its connection is retried for a while.

A Postgres restart or failover cuts every connection for a few seconds. The worker's writes
(metrics, artifact rows, the final state) are fenced by the attempt's lease and idempotent,
so repeating one is safe. Retrying for up to the heartbeat timeout is enough: past that, the
reaper has handed the job to a new attempt and this one's writes are refused anyway.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError

log = logging.getLogger(__name__)

T = TypeVar("T")
FIRST_DELAY_S = 0.2
MAX_DELAY_S = 2.0


def retry_db_write(write: Callable[[], T], deadline_s: float, what: str) -> T:
    """``write()``; on a lost database connection, retry with backoff for ``deadline_s``."""
    deadline = time.monotonic() + deadline_s
    delay = FIRST_DELAY_S
    while True:
        try:
            return write()
        except (OperationalError, InterfaceError):
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s: database unavailable; retrying in %.1f s", what, delay)
            time.sleep(delay)
            delay = min(delay * 2, MAX_DELAY_S)
