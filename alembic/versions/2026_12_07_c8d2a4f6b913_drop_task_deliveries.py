"""Drop task_deliveries: the quorum task queues count a message's returns themselves

Revision ID: c8d2a4f6b913
Revises: f3c8a1d6b254
Create Date: 2026-12-07 03:00:00

Rules for every migration here:
- it must work with the code that is running now (add first, remove in a later release);
- keep locks short: no table rewrite of a big table in one step, create indexes
  CONCURRENTLY on PostgreSQL in a migration of their own;
- a downgrade undoes exactly what the upgrade did.

Release 0.2 counted how often a task message came back after its worker was lost, because a
classic queue counts nothing. The task queues are quorum queues now (issue 15): RabbitMQ counts
the returns and hands the count to the task (``x-delivery-count``), so nothing reads or writes
this table any more. The first rule allows the drop here: 0.3 cannot start beside 0.2 workers
anyway (the broker upgrade, ``recon declare --upgrade``, needs every worker stopped first), and
the rows are only counters of messages that the upgrade's queues count afresh. The downgrade
brings back the empty table.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import models.base

revision: str = "c8d2a4f6b913"
down_revision: str | None = "f3c8a1d6b254"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_table("task_deliveries")


def downgrade() -> None:
    op.create_table(
        "task_deliveries",
        sa.Column("task_id", sa.String(length=155), nullable=False),
        sa.Column("task_name", sa.String(length=80), nullable=False),
        sa.Column("redeliveries", sa.Integer(), nullable=False),
        sa.Column("last_at", models.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_task_deliveries")),
    )
