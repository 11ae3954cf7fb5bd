"""Dead tasks: the worker's record of each task message it dead-lettered

Revision ID: 3b9e6f2d0c41
Revises: b4e8f1c2d9a3
Create Date: 2026-12-06 22:40:00

Rules for every migration here:
- it must work with the code that is running now (add first, remove in a later release);
- keep locks short: no table rewrite of a big table in one step, create indexes
  CONCURRENTLY on PostgreSQL in a migration of their own;
- a downgrade undoes exactly what the upgrade did.

A new, empty table: workers of the previous release never write it, and `recon dead replay`
refuses to send their dead task messages back to a task queue (it cannot tell them from forged
ones); those stay in recon.dead for an operator to look at.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.base

revision: str = "3b9e6f2d0c41"
down_revision: str | None = "b4e8f1c2d9a3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dead_tasks",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("queue", sa.String(length=255), nullable=False),
        sa.Column("task_name", sa.String(length=80), nullable=False),
        sa.Column("task_id", sa.String(length=155), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("replayed_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_tasks")),
    )
    op.create_index(op.f("ix_dead_tasks_fingerprint"), "dead_tasks", ["fingerprint"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_dead_tasks_fingerprint"), table_name="dead_tasks")
    op.drop_table("dead_tasks")
