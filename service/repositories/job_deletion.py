"""Deleting finished jobs: the rows of a job and its experiment's runs, then their objects.

A job's metrics, events, artifact rows and idempotency keys, and an experiment's child jobs,
go with its row (``ON DELETE CASCADE`` in the schema); its stored objects are deleted after
the commit, by their recorded keys and by the job's storage folder, so an object a worker
wrote without a row is not left behind either.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from noisefa.engine.contract.states import TERMINAL_STATES

from ..models import Artifact, Job
from ..storage import Storage

logger = logging.getLogger(__name__)


def job_tree(session: Session, job: Job) -> list[Job]:
    """``job`` and every job under it (an experiment's runs), parents first."""
    tree = [job]
    parents = [job.id]
    while parents:
        children = list(session.scalars(select(Job).where(Job.parent_id.in_(parents))))
        tree += children
        parents = [child.id for child in children]
    return tree


def unfinished_jobs_naming(session: Session, project_id: str, values: set[str]) -> int:
    """How many unfinished jobs of the project have one of ``values`` as a string anywhere
    in their spec (an upload's name, a job id in ``init_from``).

    Stored specs are searched as JSON rather than parsed again: each was validated at submit
    under the limits of that day, which may since have changed. Upload names and job ids are
    32 random hex digits, so an equal string is a reference.
    """
    specs = session.scalars(
        select(Job.spec).where(Job.project_id == project_id, Job.state.not_in(TERMINAL_STATES))
    )
    return sum(1 for spec in specs if _holds_any(spec, values))


def _holds_any(value: Any, wanted: set[str]) -> bool:
    if isinstance(value, str):
        return value in wanted
    if isinstance(value, dict):
        return any(_holds_any(item, wanted) for item in value.values())
    if isinstance(value, list):
        return any(_holds_any(item, wanted) for item in value)
    return False


def job_folder(project_id: str, job_id: str) -> str:
    """The storage prefix of a job's artifacts (see ``execution.artifact_key``)."""
    return f"{project_id}/jobs/{job_id}/"


def delete_jobs(session: Session, storage: Storage, tree: list[Job]) -> int:
    """Delete the rows of ``tree`` (a :func:`job_tree`), commit, then their stored objects;
    how many objects went."""
    ids = [job.id for job in tree]
    keys = set(session.scalars(select(Artifact.storage_key).where(Artifact.job_id.in_(ids))))
    session.execute(delete(Job).where(Job.id.in_(ids)).execution_options(synchronize_session=False))
    session.commit()
    for job in tree:
        keys.update(storage.list(job_folder(job.project_id, job.id)))
    for key in sorted(keys):
        storage.delete(key)
    logger.info("deleted jobs %s and %d stored objects", ids, len(keys))
    return len(keys)
