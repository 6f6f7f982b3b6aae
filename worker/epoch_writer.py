"""A worker task's epoch metrics, written off the training thread, many in one transaction.

An epoch's metrics take a few round trips to the database (the fenced touch, the metric
rows, the ``metrics`` event, the commit): on Postgres a few milliseconds each, most of them
the client's own CPU, paid on the training thread by every run of a stack, and a pack ends R
epochs at once. So the training thread hands each epoch to :class:`EpochWriter` and goes on,
and the writer's one thread writes whatever was handed over since its last write in one
transaction
(:func:`~noisefa.service.repositories.running.record_epochs`; each epoch still fenced by
its own attempt's lease).

What must be stored before what stays so: a checkpoint is uploaded, and a job ended, only
after :meth:`EpochWriter.flush` (every epoch handed over is stored, or its lease is lost),
so a resumed attempt never lacks an epoch before its checkpoint, and a finished job's
report reads all of its epochs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from noisefa.service.repositories import running

from .db_retry import retry_db_write

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PendingEpoch:
    """An epoch to write, and what to call (on the writer's thread) once written: with
    True when its lease held, False when it was refused or could not be written."""

    epoch: running.EpochMetrics
    written: Callable[[bool], None]


class EpochWriter:
    """One thread writing a worker task's epochs, all those waiting in one transaction."""

    def __init__(self, sessions: sessionmaker[Session], retry_s: float) -> None:
        self.sessions = sessions
        self.retry_s = retry_s
        self._pending: list[PendingEpoch] = []
        self._writing = False
        self._stopped = False
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="epoch-writer", daemon=True)
        self._thread.start()

    def add(self, epoch: running.EpochMetrics, written: Callable[[bool], None]) -> None:
        """Hand ``epoch`` over; ``written`` is called once it is stored (or refused)."""
        with self._changed:
            if self._stopped:
                raise RuntimeError("the epoch writer is stopped")
            self._pending.append(PendingEpoch(epoch, written))
            self._changed.notify_all()

    def flush(self) -> None:
        """Wait until every epoch handed over so far is written (or refused); not at all
        once the thread is gone (what it left is lost, as a killed worker's would be)."""
        with self._changed:
            self._changed.wait_for(
                lambda: (not self._pending and not self._writing) or not self._thread.is_alive()
            )

    def stop(self) -> None:
        """Write what is waiting, then end the thread."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._pending or self._stopped)
                if not self._pending:
                    return
                batch, self._pending = self._pending, []
                self._writing = True
            try:
                self._write(batch)
            finally:
                with self._changed:
                    self._writing = False
                    self._changed.notify_all()

    def _write(self, batch: list[PendingEpoch]) -> None:
        """Write ``batch`` in one transaction (riding out a database blip), then tell each
        epoch's caller. A batch that fails otherwise is written epoch by epoch, so that one
        bad epoch costs only its own run; an epoch that cannot be written counts as refused:
        its attempt stops writing, and the reaper hands its job to a new attempt."""
        epochs = [pending.epoch for pending in batch]
        jobs = ", ".join(sorted({epoch.attempt.job_id for epoch in epochs}))

        def commit() -> list[bool]:
            with self.sessions() as session:
                return running.record_epochs(session, epochs)

        try:
            held = retry_db_write(commit, self.retry_s, f"epochs of {jobs}")
        except (OperationalError, InterfaceError):  # the database stayed out of reach
            log.exception("writing %d epoch(s) of %s failed", len(batch), jobs)
            held = [False] * len(batch)
        except Exception:
            if len(batch) > 1:
                for pending in batch:
                    self._write([pending])
                return
            log.exception("writing an epoch of %s failed", jobs)
            held = [False]
        for pending, ok in zip(batch, held, strict=True):
            try:
                pending.written(ok)
            except Exception:
                log.exception("job %s: after its epoch was written", pending.epoch.attempt.job_id)
