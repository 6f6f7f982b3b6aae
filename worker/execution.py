"""Run one attempt of a job: the plain function behind the ``noisefa.run_job`` task.

The database says whether the job may start (``start_attempt`` moves it from ``queued`` to
``running`` once, under a fresh lease token). The engine runs in a scratch folder; each
checkpoint is uploaded to object storage as soon as it is written (older ones are pruned,
see ``checkpoint_keep``), so a later attempt resumes from the newest one that is intact.
Every write carries the attempt's lease: once one is refused (the reaper gave the job to
another attempt), this attempt stops and writes nothing more.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from noisefa.engine.contract.errors import EngineError, RunStopped
from noisefa.engine.contract.references import referenced_datasets
from noisefa.engine.contract.spec import parse_spec
from noisefa.engine.contract.states import FailureReason, JobKind, JobState
from noisefa.engine.run import run_job
from noisefa.service.dataset_access import without_server_paths
from noisefa.service.db import engine_from_settings, make_sessionmaker
from noisefa.service.repositories import execution as repo
from noisefa.service.settings import Settings
from noisefa.service.storage import Storage, storage_from_settings

from .artifacts import (
    CheckpointRetention,
    download_checkpoint,
    fetch_resume_checkpoint,
    upload_artifact,
)
from .callbacks import JobCallbacks, JobMonitor
from .db_retry import retry_db_write
from .evaluation import run_evaluation
from .experiments import fan_out_experiment
from .time_limit import TimeLimit
from .trackers.job_trackers import JobTrackers
from .uploads import local_dataset_files

log = logging.getLogger(__name__)

HOST_OOM_MESSAGE = "DefaultCPUAllocator: can't allocate memory"


def execute_job(job_id: str, settings: Settings) -> JobState | None:
    """Run job ``job_id`` if it is queued; return the terminal state written, else None.

    None means nothing ran (the job was not queued: cancelled before start, finished, or
    taken by another attempt) or this attempt lost its lease and left the job alone.
    """
    engine = engine_from_settings(settings)
    sessions = make_sessionmaker(engine)
    try:
        with sessions() as session:
            attempt = repo.start_attempt(session, job_id)
        if attempt is None:
            log.info("job %s is not queued; nothing to run", job_id)
            return None
        log.info("job %s: attempt %d started", job_id, attempt.attempt)
        if attempt.kind == JobKind.EXPERIMENT:  # creates its runs and returns; no engine here
            return fan_out_experiment(attempt, settings, sessions)
        return _run_attempt(attempt, settings, sessions)
    finally:
        engine.dispose()


def _run_attempt(
    attempt: repo.Attempt, settings: Settings, sessions: sessionmaker[Session]
) -> JobState | None:
    """Run the engine for a started attempt and record how it ended."""
    storage = storage_from_settings(settings)
    # One folder per attempt: a stale attempt on this host never touches a newer one's files.
    out_dir = settings.resolved_work_dir / attempt.job_id / f"attempt-{attempt.attempt}"
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    monitor = JobMonitor(attempt, sessions, settings)
    callbacks = JobCallbacks(attempt, sessions, storage, monitor, out_dir)
    outcome: dict[str, Any]
    monitor.start()
    try:
        outcome = _run_engine(attempt, settings, sessions, storage, out_dir, callbacks)
    finally:
        monitor.stop()
    if outcome.get("error_message"):  # shown to the caller: no folder of this server in it
        outcome["error_message"] = without_server_paths(outcome["error_message"], settings)
    trackers = callbacks.trackers
    tracker_files = trackers.close() if trackers is not None else []
    try:
        if monitor.lease_lost:
            log.warning("job %s: attempt %d lost its lease; stopping", *_ids(attempt))
            return None
        retry_s = settings.heartbeat_timeout_s
        try:
            retry_db_write(
                lambda: _upload_outputs(
                    attempt, sessions, storage, out_dir, outcome["state"], tracker_files
                ),
                retry_s,
                f"job {attempt.job_id}",
            )
        except Exception as exc:
            log.exception("job %s: storing its outputs failed", attempt.job_id)
            outcome = _failed(
                FailureReason.INTERNAL,
                f"the worker could not store the job's outputs ({type(exc).__name__})",
            )

        def finish() -> bool:
            with sessions() as session:
                return repo.finish(session, attempt, **outcome)

        written = retry_db_write(finish, retry_s, f"job {attempt.job_id}")
        if not written:
            log.warning("job %s: attempt %d could not record its end", *_ids(attempt))
            return None
        log.info("job %s: attempt %d ended %s", attempt.job_id, attempt.attempt, outcome["state"])
        if trackers is not None:
            trackers.end(outcome["state"], [*_output_names(outcome["state"]), *tracker_files])
        return outcome["state"]
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # the job's folder, once no attempt uses it
            out_dir.parent.rmdir()


def _run_engine(
    attempt: repo.Attempt,
    settings: Settings,
    sessions: sessionmaker[Session],
    storage: Storage,
    out_dir: Path,
    callbacks: JobCallbacks,
) -> dict[str, Any]:
    """Run the engine; return ``finish``'s keyword arguments (state, result or error)."""
    try:
        if attempt.kind == JobKind.EVALUATE:
            return run_evaluation(attempt, settings, sessions, storage, out_dir)
        spec = parse_spec(attempt.spec, settings.limits)
        callbacks.retention = CheckpointRetention.of(spec, settings.checkpoint_keep)
        with sessions() as session:
            started_at = repo.first_started_at(session, attempt.job_id)
            init = (
                repo.init_checkpoint_artifact(session, attempt.project_id, spec.init_from)
                if spec.init_from
                else None
            )
        callbacks.time_limit = TimeLimit.of(spec.time_limit_s, settings.max_job_seconds, started_at)
        if callbacks.time_limit.expired:  # earlier attempts spent it all
            return _failed(FailureReason.TIME_LIMIT, callbacks.time_limit.message())
        # A retry: the engine resumes from the newest intact checkpoint put into out_dir.
        resume = fetch_resume_checkpoint(attempt, sessions, storage, out_dir)
        if resume is not None:
            log.info("job %s: resuming from %s", attempt.job_id, resume)
        init_checkpoint = None
        if spec.init_from and resume is None:  # a resumed run has its weights already
            if init is None:
                return _failed(
                    FailureReason.INVALID_SPEC,
                    f"init_from: job {spec.init_from} has no final checkpoint to start from",
                )
            init_checkpoint = out_dir / "init" / _basename(init.name)
            download_checkpoint(storage, init, init_checkpoint)
        callbacks.trackers = JobTrackers(
            job_id=attempt.job_id,
            project_id=attempt.project_id,
            spec=spec,
            out_dir=out_dir,
            settings=settings,
            sessions=sessions,
        )
        names = [name for _, name in referenced_datasets(spec)]
        dataset_files = local_dataset_files(names, attempt.project_id, settings, sessions, storage)
        result = run_job(
            spec,
            out_dir,
            callbacks=callbacks,
            data_dir=settings.data_dir,
            download=settings.download,
            init_checkpoint=init_checkpoint,
            dataset_files=dataset_files,
        )
        return {"state": JobState.SUCCEEDED, "result": result}
    except RunStopped:
        expired = callbacks.expired_time_limit()
        if expired is not None:
            return _failed(FailureReason.TIME_LIMIT, expired.message())
        return {"state": JobState.CANCELLED}
    except Exception as exc:
        return failure_outcome(exc, f"job {attempt.job_id}: attempt {attempt.attempt}")


def failure_outcome(exc: Exception, attempt_name: str) -> dict[str, Any]:
    """``finish``'s keyword arguments for an attempt that raised ``exc``: the reason it names
    (engine errors carry theirs; running out of device or host memory is ``out_of_memory``;
    anything else is ``internal``, logged with its traceback)."""
    if isinstance(exc, ValidationError):
        return _failed(FailureReason.INVALID_SPEC, f"the stored spec is no longer valid: {exc}")
    if isinstance(exc, EngineError):
        return _failed(exc.reason, str(exc) or type(exc).__name__)
    memory = out_of_memory(exc)
    if memory is not None:
        log.error("%s ran out of %s memory", attempt_name, memory, exc_info=exc)
        return _failed(
            FailureReason.OUT_OF_MEMORY,
            f"the job ran out of {memory} memory; try a smaller model or batch",
        )
    log.error("%s crashed", attempt_name, exc_info=exc)
    return _failed(
        FailureReason.INTERNAL,
        f"the worker failed unexpectedly ({type(exc).__name__}); see its log",
    )


def out_of_memory(exc: BaseException) -> str | None:
    """``device`` or ``host`` when ``exc`` says an allocation failed there, else None.

    torch raises :class:`torch.OutOfMemoryError` for an accelerator, but a plain
    ``RuntimeError`` ("DefaultCPUAllocator: can't allocate memory ...") when host memory runs
    out in a tensor allocation; Python's own allocations raise ``MemoryError``.
    """
    if isinstance(exc, torch.OutOfMemoryError):
        return "device"
    if isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and HOST_OOM_MESSAGE in str(exc)
    ):
        return "host"
    return None


def _upload_outputs(
    attempt: repo.Attempt,
    sessions: sessionmaker[Session],
    storage: Storage,
    out_dir: Path,
    state: JobState,
    tracker_files: list[str],
) -> None:
    """Upload result.json (on success), metrics.jsonl (whatever was measured) and the
    trackers' files (the TensorBoard event file)."""
    for name in [*_output_names(state), *tracker_files]:
        path = out_dir / name
        if path.is_file():
            upload_artifact(attempt, sessions, storage, path, name)


def _output_names(state: JobState) -> list[str]:
    """The engine's output files worth keeping for a job that ended ``state``."""
    return ["result.json", "metrics.jsonl"] if state == JobState.SUCCEEDED else ["metrics.jsonl"]


def _failed(reason: FailureReason, message: str) -> dict[str, Any]:
    return {"state": JobState.FAILED, "error_reason": reason, "error_message": message}


def _basename(name: str) -> str:
    """The file name of an artifact name (checkpoints are named ``checkpoints/<file>``)."""
    return name.rsplit("/", 1)[-1]


def _ids(attempt: repo.Attempt) -> tuple[str, int]:
    return attempt.job_id, attempt.attempt
