"""Run started attempts as one pack: one monitor thread, one engine call, one stack.

A single job is a pack of one, so there is one path: every attempt is prepared on its own
(:class:`~.attempts.AttemptRun`), the ones ready to train go to
:func:`~noisefa.engine.run.run_jobs` together (runs that fit share a stacked computation;
each keeps its own folder, metrics, checkpoints, ``should_stop`` and resume point), and each
ends as its own job. What stays each member's own:

- a member that fails to set up (a dataset, an ``init_from``, a spent time limit) or
  diverges fails alone; the engine's out-of-memory error ends the call, so it fails every
  member that was training (``out_of_memory``; ``pack_memory_bytes`` sizes packs to fit);
- a cancelled member (or one past its time limit) leaves the stack at its next step, and its
  job ends as soon as its stop checkpoint is stored, while the others go on (the engine takes
  a stopped run off the stack right after that checkpoint: ``JobCallbacks.on_stopped``);
- one :class:`~.monitor.MonitorThread` heartbeats and polls cancel for every member still
  running.

An ``evaluate`` attempt (never in a pack: fan-out packs only training runs) is run alone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from noisefa.engine.contract.errors import RunStopped
from noisefa.engine.contract.states import JobKind, JobState
from noisefa.engine.run import run_jobs
from noisefa.service.repositories import execution as repo
from noisefa.service.settings import Settings
from noisefa.service.storage import storage_from_settings

from .attempts import AttemptRun
from .monitor import MonitorThread
from .outcomes import run_outcome

log = logging.getLogger(__name__)


def run_attempts(
    attempts: Sequence[repo.Attempt], settings: Settings, sessions: sessionmaker[Session]
) -> dict[str, JobState | None]:
    """Run started attempts as one pack; per job id the terminal state written (None when
    the attempt lost its lease and left the job alone)."""
    storage = storage_from_settings(settings)
    runs = [AttemptRun(attempt, settings, sessions, storage) for attempt in attempts]
    monitors = MonitorThread([run.monitor for run in runs], settings)
    for run in runs:
        run.callbacks.on_stopped = _ender(run, monitors)
    monitors.start()
    try:
        try:
            outcomes = _train(runs, settings)
        finally:
            monitors.stop()  # every member's last progress, before its end is written
        return {run.attempt.job_id: run.finish(outcomes[i]) for i, run in enumerate(runs)}
    finally:
        for run in runs:
            run.remove_folder()


def _train(runs: list[AttemptRun], settings: Settings) -> list[dict]:
    """Each run's outcome (``finish``'s keyword arguments): evaluations alone, the rest
    prepared one by one, then trained as one stack."""
    outcomes: dict[int, dict] = {}
    ready: list[int] = []
    for i, run in enumerate(runs):
        if run.attempt.kind == JobKind.EVALUATE:
            outcomes[i] = run.evaluate()
            continue
        early = run.prepare()
        if early is not None:
            outcomes[i] = early
        else:
            ready.append(i)
    if ready:
        members = [runs[i] for i in ready]
        if len(members) > 1:
            log.info("pack of %d: %s", len(members), [run.attempt.job_id for run in members])
        dataset_files: dict[str, Path] = {}
        for run in members:
            dataset_files |= run.dataset_files
        try:
            results = run_jobs(
                [run.spec for run in members],
                [run.out_dir for run in members],
                callbacks=[run.callbacks for run in members],
                data_dir=settings.data_dir,
                download=settings.download,
                init_checkpoints=[run.init_checkpoint for run in members],
                dataset_files=dataset_files,
            )
        except Exception as exc:  # out of memory, or a failure of the call as a whole
            results = [exc] * len(members)
        for i, run, result in zip(ready, members, results, strict=True):
            outcomes[i] = run_outcome(result, run.callbacks, run.name)
    return [outcomes[i] for i in range(len(runs))]


def _ender(run: AttemptRun, monitors: MonitorThread):
    """``on_stopped`` of a member: stop monitoring it and end its job now (cancelled, or
    failed ``time_limit``), on the training thread, between two steps of the others."""

    def end_now() -> None:
        monitors.detach(run.monitor)
        try:
            run.finish(run_outcome(RunStopped(run.name), run.callbacks, run.name))
        except Exception:  # its end is written again when the pack ends
            log.exception("%s: ending the stopped run failed", run.name)

    return end_now
