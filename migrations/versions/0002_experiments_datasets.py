"""Experiments and uploads: the experiment cell of child jobs, an index to find an
experiment's children, and the project's uploaded datasets with their idempotency keys.

Runs on Postgres and SQLite. The column is dropped in place (SQLite 3.35+), not by batch
mode's copy of the table: dropping ``jobs`` to copy it would cascade to every row that
references a job.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _project_fk() -> sa.Column:
    return sa.Column(
        "project_id",
        sa.String(length=32),
        sa.ForeignKey("projects.id", ondelete="CASCADE"),
        nullable=False,
    )


def upgrade() -> None:
    """Add ``jobs.condition``, ``ix_jobs_parent``, ``datasets`` and its idempotency keys."""
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("condition", sa.String(length=64), nullable=True))
    op.create_index("ix_jobs_parent", "jobs", ["parent_id"])
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(length=32), primary_key=True),
        _project_fk(),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("storage_key", sa.String(length=1024), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("input_shape", JSON_TYPE, nullable=False),
        sa.Column("num_classes", sa.Integer(), nullable=False),
        sa.Column("train_size", sa.Integer(), nullable=False),
        sa.Column("test_size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_datasets_project_created", "datasets", ["project_id", "created_at", "id"])
    op.create_table(
        "dataset_idempotency_keys",
        sa.Column(
            "project_id",
            sa.String(length=32),
            sa.ForeignKey("projects.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key", sa.String(length=255), primary_key=True),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "dataset_id",
            sa.String(length=32),
            sa.ForeignKey("datasets.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Back to 0001: drop the upload tables, the index and the column."""
    op.drop_table("dataset_idempotency_keys")
    op.drop_index("ix_datasets_project_created", table_name="datasets")
    op.drop_table("datasets")
    op.drop_index("ix_jobs_parent", table_name="jobs")
    op.drop_column("jobs", "condition")
