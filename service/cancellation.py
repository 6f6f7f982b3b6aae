"""Cancelling a job, and what a cancel means for an experiment and its runs."""

from __future__ import annotations

import logging

from celery import Celery
from sqlalchemy.orm import Session

from noisefa.engine.contract.states import JobKind

from .broker import enqueue_finish_experiment
from .models import Job
from .repositories import experiments as experiment_repo
from .repositories import jobs as job_repo

logger = logging.getLogger(__name__)


def cancel_job(session: Session, celery: Celery, job: Job) -> Job:
    """Cancel ``job`` (see :func:`job_repo.cancel_job`); the fresh row. An experiment's
    unfinished runs are cancelled with it; a run cancelled while queued may have been its
    experiment's last live one, whose aggregate is then enqueued. Commits."""
    cancelled = job_repo.cancel_job(session, job)
    if cancelled.kind == JobKind.EXPERIMENT:
        experiment_repo.cancel_children(session, cancelled.id)
        session.refresh(cancelled)
    elif cancelled.parent_id is not None:
        _aggregate_if_due(session, celery, cancelled.id)
    return cancelled


def _aggregate_if_due(session: Session, celery: Celery, job_id: str) -> None:
    """Enqueue the experiment's aggregate when ``job_id`` was its last live run."""
    due = experiment_repo.due_parent(session, job_id)
    if due is None:
        return
    try:
        enqueue_finish_experiment(celery, *due)
    except Exception:
        logger.warning("experiment %s: aggregate not sent; the reaper will", due[0], exc_info=True)
