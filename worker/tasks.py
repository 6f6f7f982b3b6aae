"""Celery tasks: thin wrappers that hand a job id to a plain function.

Everything a task needs is read from the database by id, so a message is only "run job X";
redelivering it is harmless (the database lets one attempt start, and refuses a stale one).
"""

from __future__ import annotations

from noisefa.service.broker import RUN_JOB_TASK
from noisefa.service.settings import get_settings

from .celery_app import app
from .execution import execute_job


@app.task(name=RUN_JOB_TASK, acks_late=True)
def run_job(job_id: str) -> None:
    """Run one attempt of job ``job_id`` (state and results are written to the database)."""
    execute_job(job_id, get_settings())
