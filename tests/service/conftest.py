"""Fixtures of the service tests: the API on a real database (Postgres and SQLite, each
migrated once per session) with the real Redis broker, and one fresh project per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from noisefa.service.app import create_app
from noisefa.service.settings import Settings
from noisefa.testing import broker
from noisefa.testing.db import (
    migrated,
    new_project_key,
    postgres_database,
    settings_for,
    sqlite_url,
)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh Postgres database for this test session, dropped at the end."""
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="session", params=["postgres", "sqlite"])
def settings(request, postgres_url, tmp_path_factory) -> Settings:
    """Migrated settings of one backend; tests using them run on both."""
    home = tmp_path_factory.mktemp(f"home-{request.param}")
    url = postgres_url if request.param == "postgres" else sqlite_url(home / "db")
    # The reaper's own tests start it; a background sweep would race the tests that age
    # heartbeats by hand.
    return migrated(settings_for(home, database_url=url, reaper_enabled=False))


@pytest.fixture(scope="session")
def app(settings) -> FastAPI:
    """The API of the backend, its broker queue emptied first."""
    broker.flush()
    return create_app(settings)


@pytest.fixture(scope="session")
def client(app) -> Iterator[TestClient]:
    """An in-process HTTP client of the app (lifespan included)."""
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def session(app) -> Iterator[Session]:
    """A database session of the app, for acting as a worker would."""
    with app.state.sessionmaker() as db_session:
        yield db_session


@pytest.fixture
def headers(settings) -> dict[str, str]:
    """Authorization of a fresh project (so tests never see each other's jobs)."""
    return {"Authorization": f"Bearer {new_project_key(settings)}"}


@pytest.fixture
def other_headers(settings) -> dict[str, str]:
    """Authorization of another fresh project."""
    return {"Authorization": f"Bearer {new_project_key(settings)}"}
