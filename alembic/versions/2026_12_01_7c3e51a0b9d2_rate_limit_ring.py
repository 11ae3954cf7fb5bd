"""Rate limiter exact to the window: a ring of slots per API key, live demand per key

Revision ID: 7c3e51a0b9d2
Revises: cd97d34c8873
Create Date: 2026-12-01 09:40:00.000000

``rate_limits.tat`` (the GCRA state) becomes nullable instead of being dropped, so workers of the
previous release keep running during a rolling upgrade; a later release drops it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7c3e51a0b9d2"
down_revision: str | None = "cd97d34c8873"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_limit_slots",
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("slot", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("used_at", sa.Double(), nullable=False),
        sa.Column("redriven", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("key", "slot", name=op.f("pk_rate_limit_slots")),
    )
    op.create_index(
        "ix_rate_limit_slots_key_used_at", "rate_limit_slots", ["key", "used_at"], unique=False
    )
    with op.batch_alter_table("rate_limits") as batch:
        batch.add_column(sa.Column("live_waited_at", sa.Double(), nullable=True))
        batch.add_column(sa.Column("paused_until", sa.Double(), nullable=True))
        batch.alter_column("tat", existing_type=sa.Double(), nullable=True)


def downgrade() -> None:
    # Rows written by the new limiter have no GCRA state; the old one starts them afresh.
    op.execute("DELETE FROM rate_limits WHERE tat IS NULL")
    with op.batch_alter_table("rate_limits") as batch:
        batch.alter_column("tat", existing_type=sa.Double(), nullable=False)
        batch.drop_column("paused_until")
        batch.drop_column("live_waited_at")
    op.drop_index("ix_rate_limit_slots_key_used_at", table_name="rate_limit_slots")
    op.drop_table("rate_limit_slots")
