"""The reaper's prune of old progress events: indexes on ``job_events (type, created_at)``
(the events aged past ``progress_event_retention_s``) and ``(job_id, type, id)`` (whether a
later progress event of the same job exists).

A running job writes a ``progress`` event every half second; the reaper deletes those older
than the retention but each job's latest. Without the indexes each sweep would read the
whole table. On Postgres they are built ``CONCURRENTLY``, outside the migration's
transaction, so the workers' inserts go on while a large table is indexed; ``IF NOT EXISTS``
lets a run that failed between the two be repeated. Runs on Postgres and SQLite; no row
changes.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


INDEXES = {
    "ix_job_events_type_created": ["type", "created_at"],
    "ix_job_events_job_type_id": ["job_id", "type", "id"],
}


def upgrade() -> None:
    """Add both indexes."""
    with op.get_context().autocommit_block():
        for name, columns in INDEXES.items():
            op.create_index(
                name, "job_events", columns, postgresql_concurrently=True, if_not_exists=True
            )


def downgrade() -> None:
    """Back to 0007: drop them."""
    with op.get_context().autocommit_block():
        for name in INDEXES:
            op.drop_index(
                name, table_name="job_events", postgresql_concurrently=True, if_exists=True
            )
