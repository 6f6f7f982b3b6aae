"""Alembic is the only way the schema changes: up to head and back to base, on both backends,
and head matches the models exactly."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

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
    "workers",
    "webhook_secrets",
    "webhook_deliveries",
    "checkpoint_uploads",
    "checkpoint_idempotency_keys",
}
WEBHOOK_TABLES = {"webhook_secrets", "webhook_deliveries"}
CHECKPOINT_TABLES = {"checkpoint_uploads", "checkpoint_idempotency_keys"}
TABLES_0005 = TABLES - CHECKPOINT_TABLES
TABLES_0001 = TABLES_0005 - {"datasets", "dataset_idempotency_keys", "workers"} - WEBHOOK_TABLES


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
    upgrade(settings, "0002")
    assert tables(empty_database) == TABLES_0005 - {"workers"} - WEBHOOK_TABLES
    assert "condition" in columns(empty_database, "jobs")
    insert_legacy_rows(empty_database)
    downgrade(settings, "0001")
    assert tables(empty_database) == TABLES_0001
    assert "condition" not in columns(empty_database, "jobs")
    (row,) = artifact_rows(empty_database)  # the column went without copying jobs
    assert (row["job_id"], row["name"]) == ("j", "result.json")


def names(url: str, table: str, kind: str = "columns") -> set[str]:
    """The names of ``table``'s columns (or ``"indexes"``) as the database reports them."""
    engine = make_engine(url)
    try:
        inspector = inspect(engine)
        listed = inspector.get_columns(table) if kind == "columns" else inspector.get_indexes(table)
        return {entry["name"] for entry in listed}
    finally:
        engine.dispose()


def columns(url: str, table: str) -> set[str]:
    return names(url, table)


def indexes(url: str, table: str) -> set[str]:
    return names(url, table, "indexes")


LEGACY_ROWS = (
    "INSERT INTO projects (id, name, created_at) VALUES ('p', 'p', :now)",
    "INSERT INTO jobs (id, project_id, kind, state, spec, queue, created_at, updated_at, "
    "attempt, max_attempts, cancel_requested) "
    "VALUES ('j', 'p', 'pretrain', 'succeeded', '{}', 'cpu', :now, :now, 1, 3, false)",
    "INSERT INTO artifacts (job_id, name, storage_key, size, content_type, created_at) "
    "VALUES ('j', 'result.json', 'p/jobs/j/result.json', 2, 'application/json', :now)",
)


def insert_legacy_rows(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            for statement in LEGACY_ROWS:
                connection.execute(text(statement), {"now": datetime.now(UTC)})
    finally:
        engine.dispose()


def artifact_rows(url: str) -> list[dict]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT * FROM artifacts")).mappings().all()
    finally:
        engine.dispose()
    return [dict(row) for row in rows]


def test_0003_adds_artifact_checksums_keeping_rows_and_downgrades_back(empty_database, tmp_path):
    settings = settings_for(tmp_path, database_url=empty_database)
    upgrade(settings, "0002")
    insert_legacy_rows(empty_database)  # rows from before checksums were kept
    upgrade(settings, "0003")
    (row,) = artifact_rows(empty_database)
    assert row["sha256"] is None and (row["name"], row["size"]) == ("result.json", 2)
    downgrade(settings, "0002")
    assert "sha256" not in columns(empty_database, "artifacts")
    (row,) = artifact_rows(empty_database)
    assert (row["name"], row["storage_key"], row["size"]) == (
        "result.json",
        "p/jobs/j/result.json",
        2,
    )


def test_0004_adds_the_worker_registry_and_downgrades_back(empty_database, tmp_path):
    settings = settings_for(tmp_path, database_url=empty_database)
    upgrade(settings, "0003")
    assert "workers" not in tables(empty_database)
    upgrade(settings, "0004")
    assert columns(empty_database, "workers") == {
        "id",
        "hostname",
        "pid",
        "queues",
        "datasets",
        "started_at",
        "heartbeat_at",
    }
    downgrade(settings, "0003")
    assert tables(empty_database) == TABLES_0005 - {"workers"} - WEBHOOK_TABLES


def test_0005_adds_the_webhook_tables_and_downgrades_back(empty_database, tmp_path):
    settings = settings_for(tmp_path, database_url=empty_database)
    upgrade(settings, "0004")
    assert not WEBHOOK_TABLES & tables(empty_database)
    upgrade(settings, "0005")
    assert tables(empty_database) >= WEBHOOK_TABLES
    assert {"event_id", "status", "attempts", "next_attempt_at"} <= columns(
        empty_database, "webhook_deliveries"
    )
    downgrade(settings, "0004")
    assert tables(empty_database) == TABLES_0005 - WEBHOOK_TABLES


def test_0006_adds_the_checkpoint_upload_tables_and_downgrades_back(empty_database, tmp_path):
    settings = settings_for(tmp_path, database_url=empty_database)
    upgrade(settings, "0005")
    assert tables(empty_database) == TABLES_0005
    upgrade(settings, "0006")
    assert tables(empty_database) == TABLES
    assert {"id", "project_id", "storage_key", "size", "sha256", "model_config"} <= columns(
        empty_database, "checkpoint_uploads"
    )
    assert "checkpoint_id" in columns(empty_database, "checkpoint_idempotency_keys")
    downgrade(settings, "0005")
    assert tables(empty_database) == TABLES_0005


def test_0007_adds_jobs_hold_until_and_downgrades_back_keeping_every_row(empty_database, tmp_path):
    settings = settings_for(tmp_path, database_url=empty_database)
    upgrade(settings, "0006")
    insert_legacy_rows(empty_database)  # a job and a row that cascades from it
    upgrade(settings, "0007")
    assert "hold_until" in columns(empty_database, "jobs")
    downgrade(settings, "0006")
    assert "hold_until" not in columns(empty_database, "jobs")
    (row,) = artifact_rows(empty_database)  # the column went without copying jobs
    assert (row["job_id"], row["name"]) == ("j", "result.json")


def test_0008_adds_the_progress_prune_index_and_downgrades_back(empty_database, tmp_path):
    settings = settings_for(tmp_path, database_url=empty_database)
    upgrade(settings, "0007")
    insert_legacy_rows(empty_database)
    prune_indexes = {"ix_job_events_type_created", "ix_job_events_job_type_id"}
    assert not prune_indexes & indexes(empty_database, "job_events")
    upgrade(settings, "0008")
    assert prune_indexes <= indexes(empty_database, "job_events")
    downgrade(settings, "0007")
    assert not prune_indexes & indexes(empty_database, "job_events")
    (row,) = artifact_rows(empty_database)
    assert (row["job_id"], row["name"]) == ("j", "result.json")
