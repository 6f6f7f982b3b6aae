"""Standalone packing: ``jobs.hold_until``, until when a standalone run waits unsent so that
runs submitted close to it can join its pack (``pack_window_s``; null: sent, or never held).

Runs on Postgres and SQLite. The column is added and dropped in place (SQLite 3.35+), not by
batch mode's copy of the table: dropping ``jobs`` to copy it would cascade to every row that
references a job.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the nullable ``jobs.hold_until`` and its index (the packer's query)."""
    op.add_column("jobs", sa.Column("hold_until", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_jobs_hold_until", "jobs", ["hold_until"])


def downgrade() -> None:
    """Back to 0006: drop the index and the column."""
    op.drop_index("ix_jobs_hold_until", table_name="jobs")
    op.drop_column("jobs", "hold_until")
