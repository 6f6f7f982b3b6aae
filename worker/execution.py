"""Run one attempt of a job: the plain function behind the ``noisefa.run_job`` task.

The database says whether the job may start (``start_attempt`` moves it from ``queued`` to
``running`` once, under a fresh lease token). The engine runs in a scratch folder; each
checkpoint is uploaded to object storage as soon as it is written, so a later attempt
resumes from it. Every write carries the attempt's lease: once one is refused (the reaper
gave the job to another attempt), this attempt stops and writes nothing more.
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
from noisefa.engine.run import run_job
from noisefa.service.db import engine_from_settings, make_sessionmaker
from noisefa.service.repositories import execution as repo
from noisefa.service.settings import Settings
from noisefa.service.storage import Storage, storage_from_settings

from .artifacts import upload_artifact
from .callbacks import JobCallbacks, JobMonitor
from .db_retry import retry_db_write
from .evaluation import run_evaluation
from .experiments import fan_out_experiment
from .uploads import fetch_uploads

log = logging.getLogger(__name__)


def execute_job(job_id: str, settings: Settings) -> str | None:
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
        if attempt.kind == "experiment":  # creates its runs and returns; no engine here
            return fan_out_experiment(attempt, settings, sessions)
        return _run_attempt(attempt, settings, sessions)
    finally:
        engine.dispose()


def _run_attempt(
    attempt: repo.Attempt, settings: Settings, sessions: sessionmaker[Session]
) -> str | None:
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
    try:
        if monitor.lease_lost:
            log.warning("job %s: attempt %d lost its lease; stopping", *_ids(attempt))
            return None
        retry_s = settings.heartbeat_timeout_s
        try:
            retry_db_write(
                lambda: _upload_outputs(attempt, sessions, storage, out_dir, outcome["state"]),
                retry_s,
                f"job {attempt.job_id}",
            )
        except Exception as exc:
            log.exception("job %s: storing its outputs failed", attempt.job_id)
            outcome = _failed(
                "internal", f"the worker could not store the job's outputs ({type(exc).__name__})"
            )

        def finish() -> bool:
            with sessions() as session:
                return repo.finish(session, attempt, **outcome)

        written = retry_db_write(finish, retry_s, f"job {attempt.job_id}")
        if not written:
            log.warning("job %s: attempt %d could not record its end", *_ids(attempt))
            return None
        log.info("job %s: attempt %d ended %s", attempt.job_id, attempt.attempt, outcome["state"])
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
        if attempt.kind == "evaluate":
            return run_evaluation(attempt, settings, sessions, storage, out_dir)
        spec = parse_spec(attempt.spec, settings.limits)
        with sessions() as session:
            resume = repo.latest_checkpoint_artifact(session, attempt.job_id)
            init = (
                repo.init_checkpoint_artifact(session, attempt.project_id, spec.init_from)
                if spec.init_from
                else None
            )
        if resume is not None:
            # A retry: the engine resumes from a checkpoint of the same spec in out_dir.
            _download(storage, resume.storage_key, out_dir / resume.name)
            log.info("job %s: resuming from %s", attempt.job_id, resume.name)
        init_checkpoint = None
        if spec.init_from and resume is None:  # a resumed run has its weights already
            if init is None:
                return _failed(
                    "invalid_spec",
                    f"init_from: job {spec.init_from} has no final checkpoint to start from",
                )
            init_checkpoint = out_dir / "init" / _basename(init.name)
            _download(storage, init.storage_key, init_checkpoint)
        names = [name for _, name in referenced_datasets(spec)]
        result = run_job(
            spec,
            out_dir,
            callbacks=callbacks,
            data_dir=settings.data_dir,
            init_checkpoint=init_checkpoint,
            dataset_files=fetch_uploads(names, attempt.project_id, settings, sessions, storage),
        )
        return {"state": "succeeded", "result": result}
    except RunStopped:
        return {"state": "cancelled"}
    except ValidationError as exc:
        return _failed("invalid_spec", f"the stored spec is no longer valid: {exc}")
    except EngineError as exc:
        return _failed(exc.reason, str(exc) or type(exc).__name__)
    except torch.OutOfMemoryError:
        log.exception("job %s: out of memory", attempt.job_id)
        return _failed("out_of_memory", "the job ran out of device memory; try a smaller model")
    except Exception as exc:
        log.exception("job %s: attempt %d crashed", *_ids(attempt))
        return _failed(
            "internal", f"the worker failed unexpectedly ({type(exc).__name__}); see its log"
        )


def _upload_outputs(
    attempt: repo.Attempt,
    sessions: sessionmaker[Session],
    storage: Storage,
    out_dir: Path,
    state: str,
) -> None:
    """Upload result.json (on success) and metrics.jsonl (whatever was measured)."""
    names = ["result.json", "metrics.jsonl"] if state == "succeeded" else ["metrics.jsonl"]
    for name in names:
        path = out_dir / name
        if path.is_file():
            upload_artifact(attempt, sessions, storage, path, name)


def _download(storage: Storage, key: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    storage.get_file(key, path)


def _failed(reason: str, message: str) -> dict[str, Any]:
    return {"state": "failed", "error_reason": reason, "error_message": message}


def _basename(name: str) -> str:
    """The file name of an artifact name (checkpoints are named ``checkpoints/<file>``)."""
    return name.rsplit("/", 1)[-1]


def _ids(attempt: repo.Attempt) -> tuple[str, int]:
    return attempt.job_id, attempt.attempt
