"""Dependencies of the routes, as ``Annotated`` aliases (``SessionDep``, ``CurrentProject``…).

Everything comes from ``request.app.state``, filled once by ``create_app``: two apps with
different settings can live in one process (the tests do this).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.orm import Session

from ..auth import authenticate, bearer_scheme
from ..idempotency import InFlightKeys
from ..models import Job, Project
from ..problems import ProblemError
from ..repositories.jobs import get_job
from ..settings import Settings
from ..storage import Storage


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One database session per request, closed on the event loop when the request ends.

    Closing it here, not in a threadpool step, matters: a request whose route has returned
    would otherwise hold its connection until a thread is free to close the session, while
    every thread may be waiting for a connection (a deadlock under a burst of requests).
    Closing returns the connection to the pool at once (a rollback at most).
    """
    session = request.app.state.sessionmaker()
    try:
        yield session
    finally:
        session.close()


def get_settings_dep(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings


def get_storage(request: Request) -> Storage:
    """The app's object storage."""
    return request.app.state.storage


def get_celery(request: Request) -> Celery:
    """The app's Celery client (built once per app)."""
    return request.app.state.celery


def get_in_flight_keys(request: Request) -> InFlightKeys:
    """The Idempotency-Keys this process is answering now."""
    return request.app.state.in_flight_keys


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StorageDep = Annotated[Storage, Depends(get_storage)]
CeleryDep = Annotated[Celery, Depends(get_celery)]
InFlightKeysDep = Annotated[InFlightKeys, Depends(get_in_flight_keys)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


def get_current_project(session: SessionDep, credentials: Credentials) -> Project:
    """The project of the bearer key (401 problem otherwise).

    The read transaction ends here, handing its connection back to the pool: FastAPI runs
    each dependency in its own threadpool step, and a request that held a connection while
    it waited for a thread, with every thread waiting for a connection, would deadlock the
    API under a burst of requests.
    """
    project = authenticate(session, credentials)
    session.commit()
    return project


CurrentProject = Annotated[Project, Depends(get_current_project)]


def job_not_found(job_id: str) -> ProblemError:
    """The same 404 for unknown jobs and other projects' jobs."""
    return ProblemError(404, f"job {job_id!r} not found", slug="not-found")


def get_project_job(job_id: str, session: SessionDep, project: CurrentProject) -> Job:
    """The caller's job from the path, or 404."""
    job = get_job(session, project.id, job_id)
    session.commit()  # hand the connection back between steps (see get_current_project)
    if job is None:
        raise job_not_found(job_id)
    return job


ProjectJob = Annotated[Job, Depends(get_project_job)]
