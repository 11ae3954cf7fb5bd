"""Intake keeps what arrived: raw bytes, size and hash of rejected messages; task redeliveries

Revision ID: a7c3e9f14b20
Revises: d122c071de08
Create Date: 2026-12-01 10:05:00

Rules for every migration here:
- it must work with the code that is running now (add first, remove in a later release);
- keep locks short: no table rewrite of a big table in one step, create indexes
  CONCURRENTLY on PostgreSQL in a migration of their own;
- a downgrade undoes exactly what the upgrade did.

Nullable columns without defaults: PostgreSQL adds them without rewriting the inbox.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.base

revision: str = "a7c3e9f14b20"
down_revision: str | None = "d122c071de08"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("inbox_events") as batch:
        batch.add_column(sa.Column("raw_bytes", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("body_size", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("body_sha256", sa.String(length=64), nullable=True))
    op.create_table(
        "task_deliveries",
        sa.Column("task_id", sa.String(length=155), nullable=False),
        sa.Column("task_name", sa.String(length=80), nullable=False),
        sa.Column("redeliveries", sa.Integer(), nullable=False),
        sa.Column("last_at", models.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_task_deliveries")),
    )


def downgrade() -> None:
    op.drop_table("task_deliveries")
    with op.batch_alter_table("inbox_events") as batch:
        batch.drop_column("body_sha256")
        batch.drop_column("body_size")
        batch.drop_column("raw_bytes")
