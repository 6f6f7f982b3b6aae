"""Artifact checksums: ``artifacts.sha256``, the hex sha256 of an object's bytes as written.

Reads that use the bytes (downloads, resumes, ``init_from``) check them against it. Rows
written before this revision keep a null checksum: their objects are checked by size only
(hashing them here would mean reading every object from storage inside a migration).
Runs on Postgres and SQLite (batch mode, which SQLite needs to drop the column again).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the nullable ``artifacts.sha256`` column."""
    with op.batch_alter_table("artifacts") as batch:
        batch.add_column(sa.Column("sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Back to 0002: drop the column."""
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_column("sha256")
