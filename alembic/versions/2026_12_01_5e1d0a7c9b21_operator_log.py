"""Operator log (append-only)

Revision ID: 5e1d0a7c9b21
Revises: a7c3e9f14b20
Create Date: 2026-12-01 09:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import models.base

revision: str = "5e1d0a7c9b21"
down_revision: str | None = "a7c3e9f14b20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Like outcomes: what an operator did stays on record, whatever tries to change it later.
APPEND_ONLY = """
CREATE FUNCTION operator_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'operator_log is append-only: % refused', TG_OP;
END
$$;
CREATE TRIGGER operator_log_append_only BEFORE UPDATE OR DELETE ON operator_log
    FOR EACH ROW EXECUTE FUNCTION operator_log_append_only();
"""


def upgrade() -> None:
    op.create_table(
        "operator_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("operator", sa.String(length=128), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=False),
        sa.Column("subject", sa.String(length=128), nullable=True),
        sa.Column(
            "detail",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operator_log")),
    )
    op.create_index(op.f("ix_operator_log_at"), "operator_log", ["at"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(APPEND_ONLY)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS operator_log_append_only ON operator_log")
        op.execute("DROP FUNCTION IF EXISTS operator_log_append_only()")
    op.drop_index(op.f("ix_operator_log_at"), table_name="operator_log")
    op.drop_table("operator_log")
