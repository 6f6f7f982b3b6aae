"""The trackers of one job attempt: its TensorBoard file and, when set, its MLflow mirror.

Built by the worker once the spec is parsed; fed each epoch's metrics after they are
recorded; closed when the attempt ends, handing back the files to upload as artifacts.
A tracker that fails is logged and never fails the job.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from noisefa.engine.contract.spec import JobSpec
from noisefa.service.models import Job
from noisefa.service.settings import Settings

from .tensorboard_log import TENSORBOARD_DIR, TensorBoardLog, global_step

log = logging.getLogger(__name__)

# After a job ends, how long its process waits for the MLflow calls still queued (a job
# process may exit after its job); the job's state is already written by then.
MLFLOW_DRAIN_S = 10.0


def mlflow_mirror(settings: Settings) -> Any:
    """The process's MLflow mirror, or None when ``mlflow_tracking_uri`` is unset (then
    ``mlflow`` is never imported)."""
    if not settings.mlflow_tracking_uri:
        return None
    from .mlflow_mirror import mirror_for

    return mirror_for(settings.mlflow_tracking_uri)


def start_mlflow_run(
    settings: Settings, sessions: sessionmaker[Session], job_id: str, project_id: str, spec: dict
) -> Any:
    """Start the job's MLflow run (nested under its experiment's); the mirror, or None."""
    mirror = mlflow_mirror(settings)
    if mirror is None:
        return None
    with sessions() as session:
        job = session.get(Job, job_id)
        parent_id, condition = (job.parent_id, job.condition) if job else (None, None)
    mirror.start_run(
        job_id=job_id, project_id=project_id, spec=spec, parent_id=parent_id, condition=condition
    )
    return mirror


class JobTrackers:
    """TensorBoard (always) and MLflow (when set) for one attempt of a pretrain/train job."""

    def __init__(
        self,
        *,
        job_id: str,
        project_id: str,
        spec: JobSpec,
        out_dir: Path,
        settings: Settings,
        sessions: sessionmaker[Session],
    ) -> None:
        self.job_id = job_id
        self.project_id = project_id
        self.out_dir = out_dir
        self.tensorboard = TensorBoardLog(out_dir, spec)
        self.mlflow = start_mlflow_run(
            settings, sessions, job_id, project_id, spec.model_dump(mode="json")
        )

    def add_epoch(self, phase: str, epoch: int, metrics: dict[str, float]) -> None:
        """Mirror one recorded epoch."""
        try:
            self.tensorboard.add_epoch(phase, epoch, metrics)
        except Exception:
            log.exception("job %s: writing the TensorBoard file failed", self.job_id)
        if self.mlflow is not None:
            step = global_step(self.tensorboard.offsets, phase, epoch)
            self.mlflow.log_epoch(self.job_id, step, metrics)

    def close(self) -> list[str]:
        """Close the TensorBoard file; its artifact names (``tensorboard/<file>``)."""
        try:
            files = self.tensorboard.close()
        except Exception:
            log.exception("job %s: closing the TensorBoard file failed", self.job_id)
            return []
        return [f"{TENSORBOARD_DIR}/{path.name}" for path in files]

    def end(self, state: str, artifact_names: list[str]) -> None:
        """Hand the ended job's files to MLflow and wait (bounded) for the queued calls."""
        if self.mlflow is None:
            return
        files = [(self.out_dir / name, name) for name in artifact_names]
        self.mlflow.end_run(self.job_id, self.project_id, state, files)
        drain_mlflow(self.mlflow, self.job_id)


def drain_mlflow(mirror: Any, job_id: str) -> None:
    """Wait (bounded) for the MLflow calls still queued: a job process may exit next."""
    if not mirror.drain(MLFLOW_DRAIN_S):
        log.warning("job %s: MLflow calls still queued after %gs", job_id, MLFLOW_DRAIN_S)
