"""How a running job talks to the database while the engine trains.

Two halves, so the training thread never waits on the database every step:

- :class:`~.monitor.JobMonitor`, ticked by a background thread (:mod:`.monitor`):
  heartbeats, throttled progress writes and cancel polls. Any refused write means the lease
  is lost.
- :class:`JobCallbacks` are the engine's hooks: ``on_progress`` only stores a tuple;
  per-epoch metrics go to the task's :class:`~.epoch_writer.EpochWriter`, which writes
  them off the training thread (a pack's together); a checkpoint is uploaded at once, once
  the epochs before it are stored (they must not be lost); ``should_stop`` reads two flags
  and the clock (the time limit, :mod:`.time_limit`).
  A run that stops (after its stop checkpoint), diverges or converges early leaves its stack
  at once, and ``on_run_end`` hands its outcome to ``on_ended`` (set by the pack,
  :mod:`.pack_execution`), which ends its job then, while the other runs of its pack go on.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from noisefa.engine.callbacks import RunCallbacks
from noisefa.service.repositories import execution as repo
from noisefa.service.repositories.running import EpochMetrics
from noisefa.service.storage import Storage

from .artifacts import CheckpointRetention, prune_stored_checkpoints, upload_artifact
from .db_retry import retry_db_write
from .epoch_writer import EpochWriter
from .monitor import JobMonitor
from .time_limit import TimeLimit
from .trackers.job_trackers import JobTrackers

log = logging.getLogger(__name__)


class JobCallbacks(RunCallbacks):
    """The engine's hooks for a job: progress, metrics, checkpoints, cancel, lease."""

    def __init__(
        self,
        attempt: repo.Attempt,
        sessions: sessionmaker[Session],
        storage: Storage,
        monitor: JobMonitor,
        writer: EpochWriter,
        out_dir: Path,
    ) -> None:
        self.attempt = attempt
        self.sessions = sessions
        self.storage = storage
        self.monitor = monitor
        self.writer = writer
        self.out_dir = out_dir
        # Set once the spec is parsed; None (evaluate jobs, tests) keeps every checkpoint.
        self.retention: CheckpointRetention | None = None
        # Set once the spec is parsed; None (evaluate jobs, tests) runs without a time limit.
        self.time_limit: TimeLimit | None = None
        # Set once the spec is parsed; None (evaluate jobs, tests) mirrors nothing.
        self.trackers: JobTrackers | None = None
        # Called once the run, told to stop, has uploaded its stop checkpoint: the engine
        # takes it off the stack then (RunCallbacks.should_stop), so its job may end now.
        self.on_ended: Callable[[dict | BaseException], None] | None = None
        self._epochs = 0
        self._phase_starts = 0  # a phase restarted in this attempt (a pack split) restarts its ETA

    def on_phase_start(self, phase: str, epochs: int, steps_per_epoch: int) -> None:
        """Note the phase's length, and that its ETA starts afresh (also when resumed)."""
        self._epochs = epochs
        self._phase_starts += 1

    def on_progress(self, phase: str, epoch: int, step: int, steps_per_epoch: int) -> None:
        """Hand the position to the monitor, which makes the progress and ETA of it: this runs
        every step of every run of a pack, so it only makes a tuple."""
        self.monitor.set_position(
            (
                self._phase_starts,
                phase,
                epoch,
                self._epochs,
                step,
                steps_per_epoch,
                time.monotonic(),
            )
        )

    def on_epoch_end(self, phase: str, epoch: int, metrics: dict[str, float]) -> None:
        """Hand the epoch's metrics to the writer (a resumed epoch overwrites the same
        points); the training thread goes on."""
        if self.monitor.lease_lost:
            return
        metrics = dict(metrics)  # the writer's thread reads it later
        written = functools.partial(self._epoch_written, phase, epoch, metrics)
        self.writer.add(EpochMetrics(self.attempt, phase, epoch, metrics), written)

    def _epoch_written(self, phase: str, epoch: int, metrics: dict[str, float], held: bool) -> None:
        """On the writer's thread: a refused write loses the lease; a stored epoch is
        mirrored to the trackers (only what the database holds)."""
        if not held:
            self.monitor.lose_lease()
        elif self.trackers is not None:
            self.trackers.add_epoch(phase, epoch, metrics)

    def on_checkpoint(self, path: Path) -> None:
        """Upload the checkpoint as ``checkpoints/<file>`` (the next attempt resumes from it),
        then delete the stored ones the retention no longer keeps. The epochs before it are
        stored first: a resumed attempt starts after the checkpoint's epoch."""
        self.writer.flush()
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

    def on_run_end(self, outcome: dict | BaseException) -> None:
        """The run left its stack for good: end the job now (see the module docstring)."""
        if self.on_ended is not None:
            self.on_ended(outcome)

    def should_stop(self) -> bool:
        """Stop on cancel, when another attempt owns the job now, or past the time limit."""
        stop = self.monitor.cancel_seen.is_set() or self.monitor.lease_lost
        return stop or (self.time_limit is not None and self.time_limit.expired)

    def expired_time_limit(self) -> TimeLimit | None:
        """The limit a stopped run ran past; None when it stopped for a cancel (which wins:
        the user asked) or a lost lease."""
        if self.monitor.cancel_seen.is_set() or self.monitor.lease_lost:
            return None
        return self.time_limit if self.time_limit is not None and self.time_limit.expired else None
