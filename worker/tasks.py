"""Celery tasks: thin wrappers that hand a job id to a plain function.

Everything a task needs is read from the database by id, so a message is only "run job X",
"run pack [X, Y, ...]" (an experiment's runs trained together) or "aggregate experiment X";
redelivering it is harmless (the database lets one attempt start, and refuses a stale one).
"""

from __future__ import annotations

from noisefa.service.broker import FINISH_EXPERIMENT_TASK, RUN_JOB_TASK, RUN_PACK_TASK
from noisefa.service.settings import get_settings

from .celery_app import app
from .execution import execute_job, execute_pack
from .experiments import aggregate_if_due, finish_experiment


@app.task(name=RUN_JOB_TASK, acks_late=True)
def run_job(job_id: str) -> None:
    """Run one attempt of job ``job_id`` (state and results are written to the database);
    then, if it was an experiment's last live run, ask for the experiment's aggregation."""
    settings = get_settings()
    try:
        execute_job(job_id, settings)
    finally:
        aggregate_if_due([job_id], settings)


@app.task(name=RUN_PACK_TASK, acks_late=True)
def run_pack(job_ids: list[str]) -> None:
    """Run the queued jobs of ``job_ids`` as one pack (one stack); then, as after
    ``run_job``, ask for the aggregation of each experiment whose last live runs they were."""
    settings = get_settings()
    try:
        execute_pack(job_ids, settings)
    finally:
        aggregate_if_due(job_ids, settings)


@app.task(name=FINISH_EXPERIMENT_TASK, acks_late=True)
def finish_experiment_task(job_id: str) -> None:
    """Aggregate experiment ``job_id`` if all its runs have ended (else nothing)."""
    finish_experiment(job_id, get_settings())
