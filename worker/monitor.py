"""Heartbeats, throttled progress writes and cancel polls of running jobs, off the training
thread.

:class:`JobMonitor` is one attempt's side of it: the latest position (handed over by the
engine's hooks every step as a tuple: no I/O, no dict), the cancel flag it polled, and
whether the lease is lost (any refused write). :class:`MonitorThread` is one daemon thread
that serves every attempt of a worker task (a pack's members, or a single job): each tick it
writes a member's progress when it changed (at most twice a second; a progress write is
also a heartbeat), heartbeats it every ``heartbeat_interval_s`` otherwise (even through a
long epoch), and polls its cancel flag every ``cancel_poll_s``. A tick writes all the
members' beats in one transaction and polls all their flags in one query: a pack's members
step together, so a pack of 9 makes two commits a tick instead of up to eighteen.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from noisefa.service.repositories import execution as repo
from noisefa.service.repositories import running
from noisefa.service.settings import Settings

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5
# Where a run is, as the training thread hands it over every step (every run of a pack):
# which phase start of the attempt this is, phase, epoch, epochs of the phase, step in the
# epoch, steps per epoch, monotonic time. A plain tuple, since it is made every step; the
# monitor makes the stored progress of it.
Position = tuple[int, str, int, int, int, int, float]


class JobMonitor:
    """One attempt's progress, cancel flag and lease, written by a :class:`MonitorThread`.

    Whoever writes for the attempt holds :attr:`writing`: a tick, or the last write.
    """

    def __init__(
        self, attempt: repo.Attempt, sessions: sessionmaker[Session], settings: Settings
    ) -> None:
        self.attempt = attempt
        self.sessions = sessions
        self.heartbeat_interval_s = settings.heartbeat_interval_s
        self.db_retry_s = settings.heartbeat_timeout_s
        self.cancel_poll_s = settings.cancel_poll_s
        self.cancel_seen = threading.Event()
        self.writing = threading.Lock()
        self._lease_lost = threading.Event()
        self._closed = False
        # Handed over by the training thread: one reference, replaced whole (atomic).
        self._position: Position | None = None
        # The rest is the writers' (under ``writing``): the last position made into progress,
        # that progress, the last one written, and the phase's ETA clock.
        self._position_seen: Position | None = None
        self._progress: dict[str, Any] | None = None
        self._progress_written: dict[str, Any] | None = None
        self._clock: tuple[int, float, int] | None = None  # (phase start, time, steps done)
        self._last_beat = self._last_poll = time.monotonic()

    @property
    def lease_lost(self) -> bool:
        """True once any write of this attempt was refused: it must stop writing."""
        return self._lease_lost.is_set()

    @property
    def active(self) -> bool:
        """Still written for: not closed, lease held."""
        return not self._closed and not self.lease_lost

    def lose_lease(self) -> None:
        """Mark the lease lost (a refused write anywhere in the attempt)."""
        if not self._lease_lost.is_set():
            log.warning("job %s: attempt %d lost its lease", *_ids(self.attempt))
        self._lease_lost.set()

    def set_position(self, position: Position) -> None:
        """Store the run's latest position; the thread writes it, as progress with an ETA,
        within ``PROGRESS_INTERVAL_S``."""
        self._position = position

    def due_beat(self, now: float) -> running.Beat | None:
        """This tick's write: the progress if it changed, else a heartbeat when one is due."""
        position = self._position
        if position is not None and position is not self._position_seen:
            self._position_seen, self._progress = position, self._progress_at(position)
        progress = self._progress
        if progress is not None and progress is not self._progress_written:
            return running.Beat(self.attempt, progress)
        if now - self._last_beat >= self.heartbeat_interval_s:
            return running.Beat(self.attempt)
        return None

    def _progress_at(self, position: Position) -> dict[str, Any]:
        """The stored progress of ``position``; the ETA from the rate since the first
        position of its phase start this monitor saw."""
        start, phase, epoch, epochs, step, steps, at = position
        done = (epoch - 1) * steps + step  # steps of this phase so far
        if self._clock is None or self._clock[0] != start:
            self._clock = (start, at, done)
        _, started, first = self._clock
        rate = (done - first) / (at - started) if at > started and done > first else 0.0
        remaining = epochs * steps - done
        return {
            "phase": phase,
            "epoch": epoch,
            "epochs": epochs,
            "step": step,
            "steps": steps,
            "eta_s": round(remaining / rate, 1) if rate > 0 else None,
        }

    def beat_written(self, beat: running.Beat, held: bool, now: float) -> None:
        """Note a beat's write: refused loses the lease."""
        if not held:
            self.lose_lease()
            return
        self._last_beat = now
        if beat.progress is not None:
            self._progress_written = beat.progress

    def poll_due(self, now: float) -> bool:
        """Whether this tick polls the cancel flag."""
        return now - self._last_poll >= self.cancel_poll_s

    def polled(self, cancel: bool, now: float) -> None:
        """Note a poll's answer."""
        if cancel:
            self.cancel_seen.set()
        self._last_poll = now

    def close(self) -> None:
        """Write the final position and tick no more (the job is ending); errors are logged."""
        with self.writing:
            active, self._closed = self.active, True
            # A changed progress only (no heartbeat is due at minus infinity).
            beat = self.due_beat(float("-inf")) if active else None
            if beat is None:
                return
            try:
                with self.sessions() as session:
                    self.beat_written(beat, running.report_beats(session, [beat])[0], 0.0)
            except Exception:
                log.exception("job %s: last progress write failed", self.attempt.job_id)


class MonitorThread:
    """One daemon thread ticking every monitor of a worker task until each is detached."""

    def __init__(
        self, monitors: list[JobMonitor], settings: Settings, sessions: sessionmaker[Session]
    ) -> None:
        self._monitors = list(monitors)
        self._sessions = sessions
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
            try:
                self.tick(monitors, time.monotonic())
            except Exception:
                # A database blip must not kill the runs; a long outage makes the heartbeats
                # stale, and the reaper decides.
                log.exception("monitor of %d job(s): a write failed; retrying", len(monitors))

    def tick(self, monitors: list[JobMonitor], now: float) -> None:
        """One round for ``monitors``: their due beats in one transaction, their due cancel
        polls in one query. Closed monitors and lost leases are skipped."""
        with contextlib.ExitStack() as held:
            for monitor in monitors:
                held.enter_context(monitor.writing)
            active = [monitor for monitor in monitors if monitor.active]
            beats = [(monitor, monitor.due_beat(now)) for monitor in active]
            beats = [(monitor, beat) for monitor, beat in beats if beat is not None]
            if beats:
                with self._sessions() as session:
                    written = running.report_beats(session, [beat for _, beat in beats])
                for (monitor, beat), ok in zip(beats, written, strict=True):
                    monitor.beat_written(beat, ok, now)
            polls = [monitor for monitor in active if monitor.active and monitor.poll_due(now)]
            if polls:
                with self._sessions() as session:
                    stop = running.cancels_requested(session, [m.attempt.job_id for m in polls])
                for monitor in polls:
                    monitor.polled(monitor.attempt.job_id in stop, now)


def _ids(attempt: repo.Attempt) -> tuple[str, int]:
    return attempt.job_id, attempt.attempt
