"""Rate limiter: each deferred request gets a return time of its own

Revision ID: a7d4c2e9b815
Revises: c8d2a4f6b913
Create Date: 2026-12-07 02:30:00.000000

``rate_limits.deferred_until`` is the last return time handed to a request the budget refused
for longer than it may wait in place; the next one is a slot's interval later (issue 14).
Nullable and unread by the previous release, so workers of both can run during an upgrade.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a7d4c2e9b815"
down_revision: str | None = "c8d2a4f6b913"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rate_limits") as batch:
        batch.add_column(sa.Column("deferred_until", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rate_limits") as batch:
        batch.drop_column("deferred_until")
