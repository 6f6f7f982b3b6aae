"""The reaper's prune of old progress events: an index on ``job_events (type, created_at)``.

A running job writes a ``progress`` event every half second; the reaper deletes those
older than ``progress_event_retention_s`` but each job's latest. Without the index each sweep
would read the whole table to find them. Runs on Postgres and SQLite; no row changes.

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


def upgrade() -> None:
    """Add ``ix_job_events_type_created``."""
    op.create_index("ix_job_events_type_created", "job_events", ["type", "created_at"])


def downgrade() -> None:
    """Back to 0007: drop the index."""
    op.drop_index("ix_job_events_type_created", table_name="job_events")
