"""A running job's wall-clock limit: ``max_job_seconds``, or the spec's smaller ``time_limit_s``.

Counted from ``jobs.started_at``, which the first attempt sets and later attempts keep, so
the time earlier attempts spent counts (and so does the time between attempts, while a dead
worker's job waited to be re-queued: at most about ``heartbeat_timeout_s`` plus the queue),
and a job the reaper resumes again and again still ends within its limit. Nothing new is
stored. The limit is checked in :meth:`JobCallbacks.should_stop` between steps, so the
training loop knows nothing of it: past the deadline the loop writes a checkpoint and stops,
and the attempt fails ``time_limit``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from noisefa.service.models import utcnow


@dataclass(frozen=True)
class TimeLimit:
    """The limit in seconds, the field or setting it comes from, and its deadline."""

    seconds: float
    source: str  # "time_limit_s" (the spec) or "max_job_seconds" (the deployment)
    deadline: float  # on the time.monotonic() clock of this process

    @classmethod
    def of(
        cls, time_limit_s: int | None, max_job_seconds: float, started_at: datetime | None
    ) -> TimeLimit:
        """The limit of a job whose first attempt started at ``started_at`` (None: now)."""
        if time_limit_s is not None and time_limit_s < max_job_seconds:
            seconds, source = float(time_limit_s), "time_limit_s"
        else:
            seconds, source = max_job_seconds, "max_job_seconds"
        spent = 0.0
        if started_at is not None:
            if started_at.tzinfo is None:  # SQLite hands back naive UTC
                started_at = started_at.replace(tzinfo=UTC)
            spent = max(0.0, (utcnow() - started_at).total_seconds())
        return cls(seconds, source, time.monotonic() + seconds - spent)

    @property
    def expired(self) -> bool:
        """True once the job has run for ``seconds``."""
        return time.monotonic() >= self.deadline

    def message(self) -> str:
        """The failed job's message, naming the limit."""
        return (
            f"{self.source}: the job ran past its wall-clock limit of {self.seconds:g} s "
            "(counted from its first attempt's start) and was stopped; its last checkpoint "
            "is kept"
        )
