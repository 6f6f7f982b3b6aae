"""Real databases for tests: a fresh Postgres database (random name) or a SQLite file,
migrated to head with the same code ``noisefa db upgrade`` runs.

Usage::

    with postgres_database() as url:          # created, yielded, dropped
        settings = settings_for(tmp_path, database_url=url)
        upgrade(settings)

``NOISEFA_TEST_PG_ADMIN_URL`` overrides the admin connection
(default ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from noisefa.service.db import engine_from_settings, make_sessionmaker
from noisefa.service.migrate import upgrade
from noisefa.service.repositories.projects import create_project_key
from noisefa.service.settings import Settings
from noisefa.testing.redis_dbs import redis_url

PG_ADMIN_URL = os.environ.get(
    "NOISEFA_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@contextmanager
def postgres_database(prefix: str = "noisefa_test") -> Iterator[str]:
    """Create an empty Postgres database with a random name; yield its URL; drop it."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    # pre_ping: a test may have restarted the server, cutting the pooled connection.
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def sqlite_url(folder: Path) -> str:
    """URL of a SQLite file in ``folder`` (created by the first connection)."""
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(folder / 'noisefa.db').resolve()}"


def settings_for(home: Path, **overrides: Any) -> Settings:
    """Settings rooted in ``home`` (a tmp folder): local storage and an empty data folder
    there, the default suite's Redis database as broker (no test worker consumes it)."""
    values: dict[str, Any] = {
        "home": home,
        "database_url": sqlite_url(home / "db"),
        "broker_url": redis_url("default"),
        "storage_url": (home / "objects").resolve().as_uri(),
        # An empty data folder of its own: what this machine caches elsewhere never decides
        # which built-in datasets a test's deployment can serve.
        "data_dir": home / "data",
    }
    values.update(overrides)
    return Settings(**values)


def migrated(settings: Settings) -> Settings:
    """Upgrade the settings' database to head and return the settings."""
    upgrade(settings)
    return settings


def new_project_key(settings: Settings, project: str | None = None) -> str:
    """A plaintext API key for ``project`` (a new random project by default)."""
    engine = engine_from_settings(settings)
    try:
        with make_sessionmaker(engine)() as session:
            return create_project_key(session, project or f"test-{uuid.uuid4().hex[:8]}")
    finally:
        engine.dispose()
