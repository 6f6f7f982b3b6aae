"""Submitting a job: the rules a new job must pass, then store it, then enqueue it.

The spec arrives validated against the deployment's limits (:mod:`.job_body`); what is
checked here needs the database or the settings: the project's quota, ``init_from``, the
uploads the job reads, the other datasets it names (:mod:`.dataset_access`). Each rule raises
the problem that names it; a new rule (resource estimates) is one more function called from
:func:`check_submission`.

A job is committed before it is put on the broker, so a failed enqueue loses nothing (the
reaper re-queues jobs that never started). With ``pack_window_s`` set, a standalone training
run is stored held and not sent: :mod:`.held_jobs` sends it with the runs that pack with it.
"""

from __future__ import annotations

import hashlib
import logging

from celery import Celery
from sqlalchemy.orm import Session

from noisefa.engine.contract.bodies import JobBody
from noisefa.engine.contract.checkpoint_format import checkpoint_upload_id
from noisefa.engine.contract.references import referenced_datasets
from noisefa.engine.contract.states import JobState

from . import storage_quota
from .broker import enqueue_job
from .dataset_access import refused_datasets
from .idempotency import JOB_KEYS, InFlightKeys
from .models import Job, Project
from .packs import pack_hold_until
from .problems import FieldError, ProblemError
from .repositories import checkpoints as checkpoint_repo
from .repositories import datasets as dataset_repo
from .repositories import jobs as job_repo
from .resource_check import check_resources
from .settings import Settings
from .webhooks import check_notify

logger = logging.getLogger(__name__)


def submit_job(
    session: Session,
    project: Project,
    spec: JobBody,
    settings: Settings,
    celery: Celery,
    in_flight: InFlightKeys,
    idempotency_key: str | None = None,
) -> Job:
    """Store ``spec`` as a queued job of ``project`` and enqueue it (unless it is held for a
    pack: :func:`~.packs.pack_hold_until`); with an
    ``idempotency_key``, the key's first job instead when it has one (not enqueued again)."""
    if not idempotency_key:
        job = _store(session, project, spec, settings, None)
    else:
        request_hash = hashlib.sha256(spec.canonical_json().encode()).hexdigest()
        with JOB_KEYS.hold(session, in_flight, project.id, idempotency_key):
            job, created = JOB_KEYS.replay_or_create(
                session,
                project.id,
                idempotency_key,
                request_hash,
                settings.idempotency_ttl_s,
                lambda: _store(session, project, spec, settings, (idempotency_key, request_hash)),
            )
        if not created:
            return job
    if job.hold_until is not None:
        return job
    try:
        enqueue_job(celery, job.id, job.queue)
    except Exception:
        logger.exception("job %s stored but not enqueued; the reaper will re-queue it", job.id)
    return job


def check_submission(session: Session, project: Project, spec: JobBody, settings: Settings) -> None:
    """Every rule a new job of ``project`` must pass, cheapest first."""
    check_quota(session, project, settings)
    storage_quota.check_under_quota(session, project.id, settings)
    check_init_from(session, project, spec)
    check_uploads(session, project, spec)
    check_datasets(session, spec, settings)
    check_notify(spec, settings)
    check_resources(session, project, spec, settings)  # needs the datasets checked first


def check_quota(session: Session, project: Project, settings: Settings) -> None:
    """429 when the project already has ``max_concurrent_jobs`` unfinished jobs."""
    unfinished = job_repo.count_unfinished(session, project.id)
    if unfinished >= settings.max_concurrent_jobs:
        raise ProblemError(
            429,
            f"max_concurrent_jobs: this project has {unfinished} unfinished jobs "
            f"(limit {settings.max_concurrent_jobs}); wait for some to finish",
            slug="too-many-jobs",
        )


def check_init_from(session: Session, project: Project, spec: JobBody) -> None:
    """``init_from`` (of a train or evaluate job) must name a succeeded job or an uploaded
    checkpoint (``checkpoint:<id>``) of the project; another project's answers as missing."""
    init_from = getattr(spec, "init_from", None)
    if init_from is None:
        return
    upload_id = checkpoint_upload_id(init_from)
    if upload_id is not None:
        if checkpoint_repo.get_upload(session, project.id, upload_id) is None:
            message = f"checkpoint {init_from!r} not found in this project"
            raise ProblemError(
                404,
                f"init_from: {message}",
                slug="init-from-not-found",
                errors=[FieldError(field="init_from", message=message)],
            )
        return
    source = job_repo.get_job(session, project.id, init_from)
    if source is None:
        raise ProblemError(
            404, f"init_from: job {init_from!r} not found", slug="init-from-not-found"
        )
    if source.state != JobState.SUCCEEDED:
        raise ProblemError(
            409,
            f"init_from: job {init_from!r} is {source.state}; only a succeeded job's "
            "weights can start another job",
            slug="init-from-not-succeeded",
        )


def check_uploads(session: Session, project: Project, spec: JobBody) -> None:
    """Every ``upload:<id>`` the job reads must be an upload of the project (404 naming it)."""
    missing = dataset_repo.missing_uploads(session, project.id, referenced_datasets(spec))
    if missing:
        raise ProblemError(
            404,
            "; ".join(f"{field}: upload {name!r} not found" for field, name in missing),
            slug="dataset-not-found",
            errors=[
                FieldError(field=field, message=f"upload {name!r} not found in this project")
                for field, name in missing
            ],
        )


def check_datasets(session: Session, spec: JobBody, settings: Settings) -> None:
    """Every other dataset the job reads must be one the deployment serves (422 naming
    each field): a built-in its workers hold, or a file in an operator-allowed server folder."""
    refused = refused_datasets(session, settings, spec)
    if refused:
        raise ProblemError(
            422,
            "; ".join(f"{field}: {why}" for field, why in refused),
            slug="dataset-refused",
            title="Dataset refused",
            errors=[FieldError(field=field, message=why) for field, why in refused],
        )


def _store(
    session: Session,
    project: Project,
    spec: JobBody,
    settings: Settings,
    idempotency: tuple[str, str] | None,
) -> Job:
    """Check the rules, then store the queued job (and its key). Commits."""
    check_submission(session, project, spec, settings)
    return job_repo.create_job(
        session,
        project.id,
        spec,
        max_attempts=settings.max_attempts,
        idempotency=idempotency,
        hold_until=pack_hold_until(spec.kind, settings),
    )
