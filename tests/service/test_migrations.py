"""Alembic is the only way the schema changes: up to head and back to base, on both backends,
and head matches the models exactly."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from noisefa.service.db import make_engine
from noisefa.service.migrate import downgrade, upgrade
from noisefa.service.models import Base
from noisefa.testing.db import postgres_database, settings_for, sqlite_url

TABLES = {
    "projects",
    "api_keys",
    "jobs",
    "job_metrics",
    "job_events",
    "artifacts",
    "idempotency_keys",
    "datasets",
    "dataset_idempotency_keys",
}
TABLES_0001 = TABLES - {"datasets", "dataset_idempotency_keys"}


@pytest.fixture(params=["postgres", "sqlite"])
def empty_database(request, tmp_path) -> Iterator[str]:
    if request.param == "postgres":
        with postgres_database() as url:
            yield url
    else:
        yield sqlite_url(tmp_path / "db")


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_creates_every_table_and_downgrade_removes_them(empty_database, tmp_path):
    settings = settings_for(tmp_path, database_url=empty_database)
    upgrade(settings)
    assert tables(empty_database) == TABLES
    downgrade(settings, "base")
    assert tables(empty_database) == set()
    upgrade(settings)
    assert tables(empty_database) == TABLES


def test_head_schema_matches_the_models(empty_database, tmp_path):
    upgrade(settings_for(tmp_path, database_url=empty_database))
    engine = make_engine(empty_database)
    try:
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_0002_upgrades_from_0001_and_downgrades_back(empty_database, tmp_path):
    settings = settings_for(tmp_path, database_url=empty_database)
    upgrade(settings, "0001")
    assert tables(empty_database) == TABLES_0001
    upgrade(settings)
    assert tables(empty_database) == TABLES
    assert "condition" in columns(empty_database, "jobs")
    downgrade(settings, "0001")
    assert tables(empty_database) == TABLES_0001
    assert "condition" not in columns(empty_database, "jobs")


def columns(url: str, table: str) -> set[str]:
    engine = make_engine(url)
    try:
        return {column["name"] for column in inspect(engine).get_columns(table)}
    finally:
        engine.dispose()
