"""How a running job talks to the database while the engine trains.

Two halves, so the training thread never waits on the database every step:

- :class:`JobMonitor` is a small background thread: it heartbeats every
  ``heartbeat_interval_s`` (even through a long epoch), writes the latest progress at most
  twice a second (a progress write is also a heartbeat), and polls for cancel every
  ``cancel_poll_s``. Any refused write means the lease is lost.
- :class:`JobCallbacks` are the engine's hooks: ``on_progress`` only stores a tuple;
  per-epoch metrics and checkpoint uploads are written at once (they are rare and must not
  be lost); ``should_stop`` reads two flags and the clock (the time limit, :mod:`.time_limit`).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from noisefa.engine.callbacks import RunCallbacks
from noisefa.service.repositories import execution as repo
from noisefa.service.settings import Settings
from noisefa.service.storage import Storage

from .artifacts import CheckpointRetention, prune_stored_checkpoints, upload_artifact
from .db_retry import retry_db_write
from .time_limit import TimeLimit
from .trackers.job_trackers import JobTrackers

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.5


class JobMonitor:
    """Heartbeats, throttled progress writes and cancel polls, on a daemon thread."""

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
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._progress: dict[str, Any] | None = None
        self._progress_written: dict[str, Any] | None = None
        self._thread = threading.Thread(
            target=self._loop, name=f"job-monitor-{attempt.job_id[:8]}", daemon=True
        )

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

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, then write the last progress (the job's final position)."""
        self._stop.set()
        self._thread.join(timeout=30)
        if not self.lease_lost:
            try:
                self._write_progress()
            except Exception:
                log.exception("job %s: last progress write failed", self.attempt.job_id)

    def _loop(self) -> None:
        tick = min(PROGRESS_INTERVAL_S, self.heartbeat_interval_s, self.cancel_poll_s)
        last_beat = last_poll = time.monotonic()
        while not self._stop.wait(tick) and not self.lease_lost:
            now = time.monotonic()
            try:
                if self._write_progress():
                    last_beat = now
                elif now - last_beat >= self.heartbeat_interval_s:
                    self._write(repo.heartbeat)
                    last_beat = now
                if now - last_poll >= self.cancel_poll_s:
                    with self.sessions() as session:
                        if repo.cancel_requested(session, self.attempt.job_id):
                            self.cancel_seen.set()
                    last_poll = now
            except Exception:
                # A database blip must not kill the run; a long outage makes the heartbeat
                # stale, and the reaper decides.
                log.exception("job %s: monitor write failed; retrying", self.attempt.job_id)

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


class JobCallbacks(RunCallbacks):
    """The engine's hooks for a job: progress, metrics, checkpoints, cancel, lease."""

    def __init__(
        self,
        attempt: repo.Attempt,
        sessions: sessionmaker[Session],
        storage: Storage,
        monitor: JobMonitor,
        out_dir: Path,
    ) -> None:
        self.attempt = attempt
        self.sessions = sessions
        self.storage = storage
        self.monitor = monitor
        self.out_dir = out_dir
        # Set once the spec is parsed; None (evaluate jobs, tests) keeps every checkpoint.
        self.retention: CheckpointRetention | None = None
        # Set once the spec is parsed; None (evaluate jobs, tests) runs without a time limit.
        self.time_limit: TimeLimit | None = None
        # Set once the spec is parsed; None (evaluate jobs, tests) mirrors nothing.
        self.trackers: JobTrackers | None = None
        self._epochs = 0
        self._phase_clock: tuple[float, int] | None = None  # (time, global step) at start

    def on_phase_start(self, phase: str, epochs: int, steps_per_epoch: int) -> None:
        """Reset the ETA clock (a resumed phase starts mid-way)."""
        self._epochs = epochs
        self._phase_clock = None

    def on_progress(self, phase: str, epoch: int, step: int, steps_per_epoch: int) -> None:
        """Hand the position and ETA to the monitor: no I/O on the training thread."""
        done = (epoch - 1) * steps_per_epoch + step  # steps of this phase so far
        now = time.monotonic()
        if self._phase_clock is None:
            self._phase_clock = (now, done)
        started, first = self._phase_clock
        rate = (done - first) / (now - started) if now > started and done > first else 0.0
        remaining = self._epochs * steps_per_epoch - done
        self.monitor.set_progress(
            {
                "phase": phase,
                "epoch": epoch,
                "epochs": self._epochs,
                "step": step,
                "steps": steps_per_epoch,
                "eta_s": round(remaining / rate, 1) if rate > 0 else None,
            }
        )

    def on_epoch_end(self, phase: str, epoch: int, metrics: dict[str, float]) -> None:
        """Write the epoch's metrics now (a resumed epoch overwrites the same points)."""
        if self.monitor.lease_lost:
            return

        def write() -> bool:
            with self.sessions() as session:
                return repo.record_epoch(session, self.attempt, phase, epoch, metrics)

        if not retry_db_write(write, self.monitor.db_retry_s, f"job {self.attempt.job_id}"):
            self.monitor.lose_lease()
        elif self.trackers is not None:  # only what the database holds too
            self.trackers.add_epoch(phase, epoch, metrics)

    def on_checkpoint(self, path: Path) -> None:
        """Upload the checkpoint as ``checkpoints/<file>`` (the next attempt resumes from it),
        then delete the stored ones the retention no longer keeps."""
        if self.monitor.lease_lost:
            return
        name = path.relative_to(self.out_dir).as_posix()
        what = f"job {self.attempt.job_id}"
        uploaded = retry_db_write(
            lambda: upload_artifact(self.attempt, self.sessions, self.storage, path, name),
            self.monitor.db_retry_s,
            what,
        )
        if uploaded and self.retention is not None:
            retention = self.retention
            uploaded = retry_db_write(
                lambda: prune_stored_checkpoints(
                    self.attempt, self.sessions, self.storage, retention
                ),
                self.monitor.db_retry_s,
                what,
            )
        if not uploaded:
            self.monitor.lose_lease()

    def should_stop(self) -> bool:
        """Stop on cancel, when another attempt owns the job now, or past the time limit."""
        if self.monitor.cancel_seen.is_set() or self.monitor.lease_lost:
            return True
        return self.time_limit is not None and self.time_limit.expired

    def expired_time_limit(self) -> TimeLimit | None:
        """The limit a stopped run ran past; None when it stopped for a cancel (which wins:
        the user asked) or a lost lease."""
        if self.monitor.cancel_seen.is_set() or self.monitor.lease_lost:
            return None
        return self.time_limit if self.time_limit is not None and self.time_limit.expired else None


def _ids(attempt: repo.Attempt) -> tuple[str, int]:
    return attempt.job_id, attempt.attempt
