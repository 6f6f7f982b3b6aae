"""Checkpoint uploads: a project's uploaded safetensors checkpoints and their idempotency
keys (``POST /v1/checkpoints``; jobs start from one with ``init_from: "checkpoint:<id>"``).

Runs on Postgres and SQLite.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    """Create ``checkpoint_uploads`` and ``checkpoint_idempotency_keys``."""
    op.create_table(
        "checkpoint_uploads",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column(
            "project_id",
            sa.String(length=32),
            sa.ForeignKey("projects.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("storage_key", sa.String(length=1024), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("model_config", JSON_TYPE, nullable=False),
        sa.Column("trained_on", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_checkpoint_uploads_project_created",
        "checkpoint_uploads",
        ["project_id", "created_at", "id"],
    )
    op.create_table(
        "checkpoint_idempotency_keys",
        sa.Column(
            "project_id",
            sa.String(length=32),
            sa.ForeignKey("projects.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("key", sa.String(length=255), primary_key=True),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "checkpoint_id",
            sa.String(length=32),
            sa.ForeignKey("checkpoint_uploads.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    """Back to 0005: drop the checkpoint upload tables."""
    op.drop_table("checkpoint_idempotency_keys")
    op.drop_index("ix_checkpoint_uploads_project_created", table_name="checkpoint_uploads")
    op.drop_table("checkpoint_uploads")
