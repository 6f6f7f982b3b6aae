"""Run started attempts as one pack: one monitor thread, one engine call, one stack.

A single job is a pack of one, so there is one path: every attempt is prepared on its own
(:class:`~.attempts.AttemptRun`), the ones ready to train go to
:func:`~noisefa.engine.run.run_jobs` together (runs that fit share a stacked computation;
each keeps its own folder, metrics, checkpoints, ``should_stop`` and resume point), and each
ends as its own job. What stays each member's own:

- a member that fails to set up here (a dataset, an ``init_from``, a spent time limit) ends
  at once, before the others train;
- running out of memory ends the engine call (``pack_memory_bytes`` sizes packs to fit, but
  an estimate can be wrong): a pack of several then trains again as two halves, one after
  the other, each member resuming from its own newest checkpoint (cut again while a half
  still runs out); a run alone that runs out of memory fails ``out_of_memory``;
- a member that leaves the stack early ends its job at once, while the others go on (the
  engine's ``on_run_end``, :func:`_ender`): cancelled (or past its time limit) at its next
  step, once its stop checkpoint is stored; diverged (fails alone); converged early
  (``train.early_stop``: succeeds with its result);
- one :class:`~.epoch_writer.EpochWriter` stores the members' epochs off the training
  thread, all those waiting in one transaction;
- one :class:`~.monitor.MonitorThread` heartbeats and polls cancel for every member not yet
  ended, also while the members are ended one by one after training (uploads and tracker
  drains take seconds each: a member waiting for its turn must not go stale to the reaper);
  each member is detached (its last progress written) right before its own end;
- one member whose end raises is logged and left to the reaper; the others still end.

An ``evaluate`` attempt (never in a pack: fan-out packs only training runs) is run alone.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from sqlalchemy.orm import Session, sessionmaker

from noisefa.engine.contract.states import JobKind, JobState
from noisefa.engine.run import run_jobs
from noisefa.service.repositories import execution as repo
from noisefa.service.settings import Settings
from noisefa.service.storage import storage_from_settings

from .attempts import AttemptRun
from .epoch_writer import EpochWriter
from .monitor import MonitorThread
from .outcomes import out_of_memory, run_outcome

log = logging.getLogger(__name__)


def run_attempts(
    attempts: Sequence[repo.Attempt], settings: Settings, sessions: sessionmaker[Session]
) -> dict[str, JobState | None]:
    """Run started attempts as one pack; per job id the terminal state written (None when
    the attempt lost its lease and left the job alone)."""
    storage = storage_from_settings(settings)
    writer = EpochWriter(sessions, settings.heartbeat_timeout_s)
    try:
        runs = [AttemptRun(attempt, settings, sessions, storage, writer) for attempt in attempts]
        monitors = MonitorThread([run.monitor for run in runs], settings, sessions)
        for run in runs:
            run.callbacks.on_ended = _ender(run, monitors)
        monitors.start()
        try:
            outcomes = _train(runs, settings, monitors)
            return {
                run.attempt.job_id: _end(run, outcomes[i], monitors) for i, run in enumerate(runs)
            }
        finally:
            monitors.stop()
            for run in runs:
                run.remove_folder()
    finally:
        writer.stop()


def _end(run: AttemptRun, outcome: dict, monitors: MonitorThread) -> JobState | None:
    """Stop monitoring ``run`` (its last progress is written), then end its job; an end that
    raises is logged (None: the job is left to the reaper) so the next member still ends."""
    monitors.detach(run.monitor)
    try:
        return run.finish(outcome)
    except Exception:
        log.exception("%s: ending the job failed", run.name)
        return None


def _train(runs: list[AttemptRun], settings: Settings, monitors: MonitorThread) -> list[dict]:
    """Each run's outcome (``finish``'s keyword arguments): evaluations alone, the rest
    prepared one by one (one that cannot start ends at once), then trained as one stack."""
    outcomes: dict[int, dict] = {}
    ready: list[int] = []
    for i, run in enumerate(runs):
        if run.attempt.kind == JobKind.EVALUATE:
            outcomes[i] = run.evaluate()
            continue
        early = run.prepare()
        if early is not None:
            outcomes[i] = early
            _end(run, early, monitors)
        else:
            ready.append(i)
    if ready:
        members = [runs[i] for i in ready]
        if len(members) > 1:
            log.info("pack of %d: %s", len(members), [run.attempt.job_id for run in members])
        dataset_files: dict[str, Path] = {}
        for run in members:
            dataset_files |= run.dataset_files
        results = _train_stack(members, settings, dataset_files)
        for i, run in zip(ready, members, strict=True):
            if run.attempt.job_id in results:
                outcomes[i] = run_outcome(results[run.attempt.job_id], run.callbacks, run.name)
            else:  # it left the stack before its pack ran out of memory
                outcomes[i] = run.left_outcome
    return [outcomes[i] for i in range(len(runs))]


def _train_stack(
    members: list[AttemptRun], settings: Settings, dataset_files: dict[str, Path]
) -> dict[str, dict | BaseException]:
    """Per job id what ``run_jobs`` made of ``members`` trained as one stack; when several
    run out of memory, what their halves made of those not yet ended, trained one after the
    other."""
    try:
        trained = run_jobs(
            [run.spec for run in members],
            [run.out_dir for run in members],
            callbacks=[run.callbacks for run in members],
            data_dir=settings.data_dir,
            download=settings.download,
            init_checkpoints=[run.init_checkpoint for run in members],
            dataset_files=dataset_files,
        )
        return {run.attempt.job_id: result for run, result in zip(members, trained, strict=True)}
    except Exception as exc:  # out of memory, or a failure of the call as a whole
        memory = out_of_memory(exc)
        if memory is None:
            return {run.attempt.job_id: exc for run in members}
        # Its traceback's frames hold the failed stack's tensors: not kept (nor logged).
        exc = exc.with_traceback(None)
        if len(members) == 1:
            return {members[0].attempt.job_id: exc}
        log.warning(
            "a pack of %d ran out of %s memory; training it in halves", len(members), memory
        )
    # What of the failed stack is still held in reference cycles (frames, callbacks) is
    # collected now, then the device's cache is handed back, before the halves allocate.
    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.empty_cache()
    results: dict[str, dict | BaseException] = {}
    going = [run for run in members if run.left_outcome is None]
    half = (len(going) + 1) // 2
    for part in (going[:half], going[half:]):
        if part:
            results |= _train_stack(part, settings, dataset_files)
    return results


def _ender(run: AttemptRun, monitors: MonitorThread):
    """``on_ended`` of a member: stop monitoring it and end its job now with the outcome the
    engine gave (cancelled, failed ``time_limit`` or ``diverged``, or succeeded early), on the
    training thread, between two steps of the others."""

    def end_now(outcome: dict | BaseException) -> None:
        run.left_outcome = run_outcome(outcome, run.callbacks, run.name)
        _end(run, run.left_outcome, monitors)

    return end_now
