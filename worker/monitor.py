"""Heartbeats, throttled progress writes and cancel polls of running jobs, off the training
thread.

:class:`JobMonitor` is one attempt's side of it: the latest progress (handed over by the
engine's hooks without I/O), the cancel flag it polled, and whether the lease is lost (any
refused write). :class:`MonitorThread` is one daemon thread that serves every attempt of a
worker task (a pack's members, or a single job): each tick it writes a member's progress
when it changed (at most twice a second; a progress write is also a heartbeat), heartbeats
it every ``heartbeat_interval_s`` otherwise (even through a long epoch), and polls its cancel
flag every ``cancel_poll_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from noisefa.service.repositories import execution as repo
from noisefa.service.settings import Settings

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5


class JobMonitor:
    """One attempt's progress, cancel flag and lease, written by a :class:`MonitorThread`."""

    def __init__(
        self, attempt: repo.Attempt, sessions: sessionmaker[Session], settings: Settings
    ) -> None:
        self.attempt = attempt
        self.sessions = sessions
        self.heartbeat_interval_s = settings.heartbeat_interval_s
        self.db_retry_s = settings.heartbeat_timeout_s
        self.cancel_poll_s = settings.cancel_poll_s
        self.cancel_seen = threading.Event()
        self._lease_lost = threading.Event()
        self._lock = threading.Lock()  # the progress handed over by the training thread
        self._writing = threading.Lock()  # one writer at a time: a tick, or the last write
        self._closed = False
        self._progress: dict[str, Any] | None = None
        self._progress_written: dict[str, Any] | None = None
        self._last_beat = self._last_poll = time.monotonic()

    @property
    def lease_lost(self) -> bool:
        """True once any write of this attempt was refused: it must stop writing."""
        return self._lease_lost.is_set()

    def lose_lease(self) -> None:
        """Mark the lease lost (a refused write anywhere in the attempt)."""
        if not self._lease_lost.is_set():
            log.warning("job %s: attempt %d lost its lease", *_ids(self.attempt))
        self._lease_lost.set()

    def set_progress(self, progress: dict[str, Any]) -> None:
        """Store the latest progress; the thread writes it within ``PROGRESS_INTERVAL_S``."""
        with self._lock:
            self._progress = progress

    def tick(self, now: float) -> None:
        """One round: the progress if it changed, else a heartbeat when one is due; a cancel
        poll when one is due. Nothing once closed or the lease is lost."""
        with self._writing:
            if self._closed or self.lease_lost:
                return
            if self._write_progress():
                self._last_beat = now
            elif now - self._last_beat >= self.heartbeat_interval_s:
                self._write(repo.heartbeat)
                self._last_beat = now
            if now - self._last_poll >= self.cancel_poll_s:
                with self.sessions() as session:
                    if repo.cancel_requested(session, self.attempt.job_id):
                        self.cancel_seen.set()
                self._last_poll = now

    def close(self) -> None:
        """Write the final position and tick no more (the job is ending); errors are logged."""
        with self._writing:
            if self._closed:
                return
            self._closed = True
            if self.lease_lost:
                return
            try:
                self._write_progress()
            except Exception:
                log.exception("job %s: last progress write failed", self.attempt.job_id)

    def _write_progress(self) -> bool:
        """Write the progress if it changed since the last write; True when written."""
        with self._lock:
            progress = self._progress
        if progress is None or progress is self._progress_written:
            return False
        self._write(repo.report_progress, progress)
        self._progress_written = progress
        return True

    def _write(self, write: Any, *args: Any) -> None:
        with self.sessions() as session:
            if not write(session, self.attempt, *args):
                self.lose_lease()


class MonitorThread:
    """One daemon thread ticking every monitor of a worker task until each is detached."""

    def __init__(self, monitors: list[JobMonitor], settings: Settings) -> None:
        self._monitors = list(monitors)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tick_s = min(
            PROGRESS_INTERVAL_S, settings.heartbeat_interval_s, settings.cancel_poll_s
        )
        first = monitors[0].attempt.job_id[:8] if monitors else "none"
        self._thread = threading.Thread(target=self._loop, name=f"job-monitor-{first}", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def detach(self, monitor: JobMonitor) -> None:
        """Stop ticking ``monitor`` (its job is ending) and close it."""
        with self._lock:
            if monitor in self._monitors:
                self._monitors.remove(monitor)
        monitor.close()

    def stop(self) -> None:
        """Stop the thread, then write the last progress of every monitor still attached."""
        self._stop.set()
        self._thread.join(timeout=30)
        with self._lock:
            remaining, self._monitors = self._monitors, []
        for monitor in remaining:
            monitor.close()

    def _loop(self) -> None:
        while not self._stop.wait(self._tick_s):
            with self._lock:
                monitors = list(self._monitors)
            now = time.monotonic()
            for monitor in monitors:
                try:
                    monitor.tick(now)
                except Exception:
                    # A database blip must not kill the run; a long outage makes the
                    # heartbeat stale, and the reaper decides.
                    log.exception("job %s: monitor write failed; retrying", monitor.attempt.job_id)


def _ids(attempt: repo.Attempt) -> tuple[str, int]:
    return attempt.job_id, attempt.attempt
