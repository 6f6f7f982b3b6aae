"""Deleting a project's data: an upload, or a finished job with everything it stored.

The rules, each answered with a problem that names it:

- an upload read by an unfinished job cannot go (409 with the count): the job would fail
  when its worker fetches it; the same for an uploaded checkpoint an unfinished job names in
  ``init_from``;
- only a terminal job can be deleted (409 otherwise): a running one still writes;
- an experiment goes with all its runs; one run of an experiment cannot be deleted on its
  own (409 naming the experiment), since the experiment's report is built from every run;
- a job that an unfinished job starts from (``init_from``) cannot go (409 with the count).

A job submitted at the same moment as the delete may still name what is deleted; its
worker then fails it as ``dataset_unavailable`` (or for a missing checkpoint), as for any
missing input. Rows go first, then objects (see the repositories).
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from noisefa.engine.contract.states import TERMINAL_STATES

from .models import CheckpointUpload, Dataset, Job
from .problems import ProblemError
from .repositories import checkpoints as checkpoint_repo
from .repositories import datasets as dataset_repo
from .repositories import job_deletion
from .storage import Storage


def delete_upload(session: Session, storage: Storage, dataset: Dataset) -> None:
    """Delete an upload of the caller (409 while an unfinished job reads it)."""
    name = dataset_repo.upload_name(dataset.id)
    users = job_deletion.unfinished_jobs_naming(session, dataset.project_id, {name})
    if users:
        raise ProblemError(
            409,
            f"dataset {dataset.id!r} is read by {users} unfinished job(s); cancel them or wait "
            "for them to finish",
            slug="dataset-in-use",
        )
    dataset_repo.delete_upload(session, storage, dataset)


def delete_checkpoint(session: Session, storage: Storage, row: CheckpointUpload) -> None:
    """Delete an uploaded checkpoint of the caller (409 while an unfinished job starts from
    it or evaluates it)."""
    users = job_deletion.unfinished_jobs_naming(session, row.project_id, {row.name})
    if users:
        raise ProblemError(
            409,
            f"checkpoint {row.id!r} is the init_from of {users} unfinished job(s); cancel them "
            "or wait for them to finish",
            slug="checkpoint-in-use",
        )
    checkpoint_repo.delete_upload(session, storage, row)


def delete_job(session: Session, storage: Storage, job: Job) -> None:
    """Delete a terminal job of the caller (an experiment with all its runs)."""
    if job.parent_id is not None:
        raise ProblemError(
            409,
            f"job {job.id!r} is a run of experiment {job.parent_id!r}; delete the experiment "
            "to delete its runs",
            slug="job-is-experiment-run",
        )
    tree = job_deletion.job_tree(session, job)
    unfinished = [member for member in tree if member.state not in TERMINAL_STATES]
    if unfinished:
        raise ProblemError(
            409,
            f"job {job.id!r} is {job.state}"
            + (f" ({len(unfinished)} of its jobs are unfinished)" if len(tree) > 1 else "")
            + "; only finished jobs can be deleted: cancel it first",
            slug="job-not-finished",
        )
    ids = {member.id for member in tree}
    users = job_deletion.unfinished_jobs_naming(session, job.project_id, ids)
    if users:
        raise ProblemError(
            409,
            f"job {job.id!r} is the init_from of {users} unfinished job(s); wait for them "
            "to finish",
            slug="job-in-use",
        )
    job_deletion.delete_jobs(session, storage, tree)
