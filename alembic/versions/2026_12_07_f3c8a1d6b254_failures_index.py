"""A partial index for the failures list: failed and gave-up outcomes by (at, id)

Revision ID: f3c8a1d6b254
Revises: e5a1c7d3f902
Create Date: 2026-12-07 02:00:00

Rules for every migration here:
- it must work with the code that is running now (add first, remove in a later release);
- keep locks short: no table rewrite of a big table in one step, create indexes
  CONCURRENTLY on PostgreSQL in a migration of their own;
- a downgrade undoes exactly what the upgrade did.

`recon audit failures` asks for a window's failures, newest first, up to a limit. On
(status, at) PostgreSQL reads both statuses' ranges for the whole window, merges and sorts them
before the limit applies: 131.7 ms at p95 for one day of a million outcome rows (issue 14). This
index holds only the failures, in the list's order, so the scan walks back from the window's end
and stops at the limit. It is small: a few per cent of the table.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f3c8a1d6b254"
down_revision: str | None = "e5a1c7d3f902"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = "ix_outcomes_failures_at_id"
FAILURES = "status IN ('failed', 'gave_up')"


def upgrade() -> None:
    # CONCURRENTLY cannot run inside a transaction; it keeps writes flowing while it builds.
    with op.get_context().autocommit_block():
        op.create_index(
            NAME,
            "outcomes",
            ["at", "id"],
            unique=False,
            postgresql_where=sa.text(FAILURES),
            sqlite_where=sa.text(FAILURES),
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(NAME, table_name="outcomes", postgresql_concurrently=True)
