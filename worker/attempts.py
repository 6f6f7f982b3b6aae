"""One started attempt around the engine: its folder, its hooks, what it needs before the
engine runs, and how it ends. The same for a job run alone and for a member of a pack.

- :meth:`AttemptRun.prepare` parses the spec, sets the retention and the time limit, puts
  the newest intact stored checkpoint into the folder (a retry resumes from it), fetches an
  ``init_from`` checkpoint and the uploads the job reads, and opens its trackers.
- :meth:`AttemptRun.finish` uploads the outputs (``result.json`` on success,
  ``metrics.jsonl``, the trackers' files) and ends the job with ``repo.finish``, once.

Every write carries the attempt's lease: once one is refused (the reaper gave the job to
another attempt), the attempt stops and writes nothing more. One folder per attempt, so a
stale attempt on this host never touches a newer one's files.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import threading
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from noisefa.engine.contract.references import referenced_datasets
from noisefa.engine.contract.spec import JobSpec, parse_spec
from noisefa.engine.contract.states import FailureReason, JobState
from noisefa.service.dataset_access import without_server_paths
from noisefa.service.repositories import execution as repo
from noisefa.service.settings import Settings
from noisefa.service.storage import Storage

from .artifacts import (
    CheckpointRetention,
    download_checkpoint,
    fetch_resume_checkpoint,
    init_checkpoint_path,
    missing_init_message,
    upload_artifact,
)
from .callbacks import JobCallbacks
from .db_retry import retry_db_write
from .epoch_writer import EpochWriter
from .evaluation import run_evaluation
from .monitor import JobMonitor
from .outcomes import failed, failure_outcome
from .time_limit import TimeLimit
from .trackers.job_trackers import JobTrackers
from .uploads import local_dataset_files

log = logging.getLogger(__name__)


class AttemptRun:
    """A started attempt's folder, monitor and engine hooks, its setup and its end."""

    def __init__(
        self,
        attempt: repo.Attempt,
        settings: Settings,
        sessions: sessionmaker[Session],
        storage: Storage,
        writer: EpochWriter,
    ) -> None:
        self.attempt = attempt
        self.settings = settings
        self.sessions = sessions
        self.storage = storage
        self.out_dir = settings.resolved_work_dir / attempt.job_id / f"attempt-{attempt.attempt}"
        shutil.rmtree(self.out_dir, ignore_errors=True)
        self.out_dir.mkdir(parents=True)
        self.monitor = JobMonitor(attempt, sessions, settings)
        self.callbacks = JobCallbacks(
            attempt, sessions, storage, self.monitor, writer, self.out_dir
        )
        # Set by prepare() for a run the engine trains.
        self.spec: JobSpec | None = None
        self.init_checkpoint: Path | None = None
        self.dataset_files: dict[str, Path] = {}
        self.ended = False  # finish() ran (its state is below)
        # How the engine ended it early, when it left its stack before the others (it never
        # trains again in this task, even if ending its job failed).
        self.left_outcome: dict[str, Any] | None = None
        self.state: JobState | None = None
        self._finishing = threading.Lock()

    @property
    def name(self) -> str:
        """``job <id>: attempt <n>``, for logs."""
        return f"job {self.attempt.job_id}: attempt {self.attempt.attempt}"

    def prepare(self) -> dict[str, Any] | None:
        """Everything the engine needs for this run; ``finish``'s keyword arguments when it
        ends before training (time spent, an ``init_from`` without a checkpoint, a dataset
        or a stored spec that fails), else None."""
        try:
            return self._prepare()
        except Exception as exc:
            return failure_outcome(exc, self.name)

    def _prepare(self) -> dict[str, Any] | None:
        attempt, settings, sessions, callbacks = (
            self.attempt,
            self.settings,
            self.sessions,
            self.callbacks,
        )
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
            return failed(FailureReason.TIME_LIMIT, callbacks.time_limit.message())
        # A retry: the engine resumes from the newest intact checkpoint put into out_dir.
        resume = fetch_resume_checkpoint(attempt, sessions, self.storage, self.out_dir)
        if resume is not None:
            log.info("job %s: resuming from %s", attempt.job_id, resume)
        if spec.init_from and resume is None:  # a resumed run has its weights already
            if init is None:
                return failed(
                    FailureReason.INVALID_SPEC, missing_init_message(spec.init_from, "start from")
                )
            self.init_checkpoint = init_checkpoint_path(self.out_dir, init)
            download_checkpoint(self.storage, init, self.init_checkpoint)
        callbacks.trackers = JobTrackers(
            job_id=attempt.job_id,
            project_id=attempt.project_id,
            spec=spec,
            out_dir=self.out_dir,
            settings=settings,
            sessions=sessions,
        )
        names = [name for _, name in referenced_datasets(spec)]
        self.dataset_files = local_dataset_files(
            names, attempt.project_id, settings, sessions, self.storage
        )
        self.spec = spec
        return None

    def evaluate(self) -> dict[str, Any]:
        """Run this ``evaluate`` attempt; ``finish``'s keyword arguments."""
        try:
            return run_evaluation(
                self.attempt, self.settings, self.sessions, self.storage, self.out_dir
            )
        except Exception as exc:
            return failure_outcome(exc, self.name)

    def finish(self, outcome: dict[str, Any]) -> JobState | None:
        """Upload the outputs and end the job as ``outcome`` says, once (a pack's member that
        stopped early has ended already); the state written, None when the lease was lost."""
        with self._finishing:
            if not self.ended:
                self.state = self._finish(outcome)
                self.ended = True
            return self.state

    def _finish(self, outcome: dict[str, Any]) -> JobState | None:
        attempt, sessions = self.attempt, self.sessions
        self.callbacks.writer.flush()  # its epochs are stored (or its lease lost) first
        if outcome.get("error_message"):  # shown to the caller: no folder of this server in it
            outcome = {
                **outcome,
                "error_message": without_server_paths(outcome["error_message"], self.settings),
            }
        trackers = self.callbacks.trackers
        tracker_files = trackers.close() if trackers is not None else []
        if self.monitor.lease_lost:
            log.warning("%s lost its lease; stopping", self.name)
            return None
        retry_s = self.settings.heartbeat_timeout_s
        try:
            retry_db_write(
                lambda: self._upload_outputs(outcome["state"], tracker_files),
                retry_s,
                f"job {attempt.job_id}",
            )
        except Exception as exc:
            log.exception("job %s: storing its outputs failed", attempt.job_id)
            outcome = failed(
                FailureReason.INTERNAL,
                f"the worker could not store the job's outputs ({type(exc).__name__})",
            )

        def write_end() -> bool:
            with sessions() as session:
                return repo.finish(session, attempt, **outcome)

        if not retry_db_write(write_end, retry_s, f"job {attempt.job_id}"):
            log.warning("%s could not record its end", self.name)
            return None
        log.info("%s ended %s", self.name, outcome["state"])
        if trackers is not None:
            trackers.end(outcome["state"], [*_output_names(outcome["state"]), *tracker_files])
        return outcome["state"]

    def _upload_outputs(self, state: JobState, tracker_files: list[str]) -> None:
        """Upload result.json (on success), metrics.jsonl (whatever was measured) and the
        trackers' files (the TensorBoard event file)."""
        for name in [*_output_names(state), *tracker_files]:
            path = self.out_dir / name
            if path.is_file():
                upload_artifact(self.attempt, self.sessions, self.storage, path, name)

    def remove_folder(self) -> None:
        """Delete the attempt's folder, and the job's once no attempt uses it."""
        shutil.rmtree(self.out_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.out_dir.parent.rmdir()


def _output_names(state: JobState) -> list[str]:
    """The engine's output files worth keeping for a job that ended ``state``."""
    return ["result.json", "metrics.jsonl"] if state == JobState.SUCCEEDED else ["metrics.jsonl"]
