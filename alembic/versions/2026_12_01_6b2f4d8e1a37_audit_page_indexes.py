"""Indexes for the audit page: the summary (index-only) and rejected messages by time

Revision ID: 6b2f4d8e1a37
Revises: 5e1d0a7c9b21
Create Date: 2026-12-01 10:00:00

Built CONCURRENTLY on PostgreSQL (outside a transaction): outcomes and the inbox are big and
written all the time, and a plain CREATE INDEX would block those writes while it runs.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "6b2f4d8e1a37"
down_revision: str | None = "5e1d0a7c9b21"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = (
    # The summary counts (kind, status, code) in a time window: with every column it reads in
    # the index, PostgreSQL answers from the index alone (a week of a million rows: see bench/).
    ("ix_outcomes_at_kind_status_code", "outcomes", ["at", "kind", "status", "code"]),
    # `recon audit rejected` and the page list rejected messages newest first in a window.
    ("ix_inbox_events_status_received_at", "inbox_events", ["status", "received_at"]),
)


def upgrade() -> None:
    concurrently = op.get_bind().dialect.name == "postgresql"
    with op.get_context().autocommit_block():
        for name, table, columns in INDEXES:
            op.create_index(name, table, columns, postgresql_concurrently=concurrently)


def downgrade() -> None:
    concurrently = op.get_bind().dialect.name == "postgresql"
    with op.get_context().autocommit_block():
        for name, table, _ in reversed(INDEXES):
            op.drop_index(name, table_name=table, postgresql_concurrently=concurrently)
