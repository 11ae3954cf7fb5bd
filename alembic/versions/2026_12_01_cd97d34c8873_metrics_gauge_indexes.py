"""Indexes for the metrics' gauges: open work by state and age, unmatched redemptions

Revision ID: cd97d34c8873
Revises: 6b2f4d8e1a37
Create Date: 2026-12-01 09:45:00.000000

Rules for every migration here:
- it must work with the code that is running now (add first, remove in a later release);
- keep locks short: no table rewrite of a big table in one step, create indexes
  CONCURRENTLY on PostgreSQL in a migration of their own;
- a downgrade undoes exactly what the upgrade did.

Every scrape of /metrics asks PostgreSQL for the oldest open item of each state and counts the
redemptions still waiting for a bill; with these the answers are index-only and stop at the first
row (oldest) or at a bound (counts), however large the tables grow.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "cd97d34c8873"
down_revision: str | None = "6b2f4d8e1a37"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BILLED = "transaction_id IS NOT NULL"
UNBILLED = "transaction_id IS NULL"
INDEXES = (
    ("ix_redemptions_billed_state_created_at", "redemptions", ["state", "created_at"], BILLED),
    ("ix_redemptions_unbilled_kind_created_at", "redemptions", ["kind", "created_at"], UNBILLED),
    ("ix_points_redeem_requests_state_created_at", "points_redeem_requests",
     ["state", "created_at"], None),
)  # fmt: skip


def upgrade() -> None:
    # CONCURRENTLY cannot run inside a transaction; it keeps writes flowing while it builds.
    with op.get_context().autocommit_block():
        for name, table, columns, where in INDEXES:
            condition = sa.text(where) if where else None
            op.create_index(
                name,
                table,
                columns,
                unique=False,
                postgresql_where=condition,
                sqlite_where=condition,
                postgresql_concurrently=True,
            )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name, table, _columns, _where in reversed(INDEXES):
            op.drop_index(name, table_name=table, postgresql_concurrently=True)
