"""Run an ``evaluate`` job: a finished job's final checkpoint, or an uploaded checkpoint
(``checkpoint:<id>``), against datasets and shifts.

The checkpoint is downloaded like a train job's ``init_from``; the engine writes
``result.json`` (``evaluations``: one ``{dataset, shift, severity, accuracy}`` per cell) and
the accuracy-vs-severity plot, which is uploaded here (``result.json`` is uploaded with every
job's outputs). Errors propagate to the caller, which maps them to failure reasons.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from noisefa.engine.contract.checkpoint_format import checkpoint_upload_id
from noisefa.engine.contract.errors import InvalidSpecError
from noisefa.engine.contract.evaluate_spec import EvaluateSpec
from noisefa.engine.contract.states import JobState
from noisefa.engine.ood import PLOT_NAME, evaluate_checkpoint
from noisefa.engine.ood_detection import RELIABILITY_PLOT_NAME
from noisefa.service.models import Artifact, CheckpointUpload
from noisefa.service.repositories import execution as repo
from noisefa.service.repositories import jobs as job_repo
from noisefa.service.settings import Settings
from noisefa.service.storage import Storage

from .artifacts import (
    download_checkpoint,
    init_checkpoint_path,
    missing_init_message,
    upload_artifact,
)
from .uploads import local_dataset_files


def run_evaluation(
    attempt: repo.Attempt,
    settings: Settings,
    sessions: sessionmaker[Session],
    storage: Storage,
    out_dir: Path,
) -> dict[str, Any]:
    """Evaluate and upload the plot; ``finish``'s keyword arguments for a success."""
    spec = EvaluateSpec.model_validate(attempt.spec)
    upload_id = checkpoint_upload_id(spec.init_from)
    with sessions() as session:
        init = repo.init_checkpoint_artifact(session, attempt.project_id, spec.init_from)
        trained_on = _training_set(session, attempt.project_id, spec.init_from, init)
    if init is None:
        raise InvalidSpecError(missing_init_message(spec.init_from, "evaluate"))
    checkpoint = init_checkpoint_path(out_dir, init)
    download_checkpoint(storage, init, checkpoint)  # intact, or CorruptCheckpointError
    names = spec.datasets or ([trained_on] if trained_on else [])
    dataset_files = local_dataset_files(names, attempt.project_id, settings, sessions, storage)
    result = evaluate_checkpoint(
        spec,
        checkpoint,
        out_dir,
        data_dir=settings.data_dir,
        download=settings.download,
        dataset_files=dataset_files,
        trust_training_set=upload_id is None,
    )
    # The worker's scratch path means nothing to a client: name the job and artifact instead.
    if upload_id is not None:
        result["checkpoint"] = {"checkpoint_id": upload_id}
    else:
        result["checkpoint"] = {"job_id": spec.init_from, "artifact": init.name}
    # The reliability diagram exists only when the training set's test split could be read.
    plots = [name for name in (PLOT_NAME, RELIABILITY_PLOT_NAME) if (out_dir / name).is_file()]
    result["artifacts"] = ["result.json", *plots]
    tmp = out_dir / ".result.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out_dir / "result.json")
    for name in plots:
        upload_artifact(attempt, sessions, storage, out_dir / name, name)
    return {"state": JobState.SUCCEEDED, "result": result}


def _training_set(
    session: Session, project_id: str, init_from: str, init: Artifact | CheckpointUpload | None
) -> str | None:
    """The dataset the evaluated model trained on: an upload's built-in (recorded when it was
    uploaded), else the source job's ``train.dataset``."""
    if isinstance(init, CheckpointUpload):
        return init.trained_on
    source = job_repo.get_job(session, project_id, init_from)
    return ((source.spec if source else {}).get("train") or {}).get("dataset")
