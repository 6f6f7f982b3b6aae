"""Dependencies of the routes, as ``Annotated`` aliases (``SessionDep``, ``CurrentProject``…).

Everything comes from ``request.app.state``, filled once by ``create_app``: two apps with
different settings can live in one process (the tests do this).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.orm import Session

from ..auth import authenticate, bearer_scheme
from ..models import Job, Project
from ..problems import ProblemError
from ..repositories.jobs import get_job
from ..settings import Settings
from ..storage import Storage


def get_session(request: Request) -> Iterator[Session]:
    """One database session per request."""
    with request.app.state.sessionmaker() as session:
        yield session


def get_settings_dep(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings


def get_storage(request: Request) -> Storage:
    """The app's object storage."""
    return request.app.state.storage


def get_celery(request: Request) -> Celery:
    """The app's Celery client (built once per app)."""
    return request.app.state.celery


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StorageDep = Annotated[Storage, Depends(get_storage)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


def get_current_project(session: SessionDep, credentials: Credentials) -> Project:
    """The project of the bearer key (401 problem otherwise)."""
    return authenticate(session, credentials)


CurrentProject = Annotated[Project, Depends(get_current_project)]


def job_not_found(job_id: str) -> ProblemError:
    """The same 404 for unknown jobs and other projects' jobs."""
    return ProblemError(404, f"job {job_id!r} not found", slug="not-found")


def get_project_job(job_id: str, session: SessionDep, project: CurrentProject) -> Job:
    """The caller's job from the path, or 404."""
    job = get_job(session, project.id, job_id)
    if job is None:
        raise job_not_found(job_id)
    return job


ProjectJob = Annotated[Job, Depends(get_project_job)]
