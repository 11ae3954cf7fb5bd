"""Initial schema: inbox, redemptions, transactions, append-only outcomes, rate limiter

Revision ID: d122c071de08
Revises:
Create Date: 2026-11-21 21:18:32.938572

Rules for every migration here:
- it must work with the code that is running now (add first, remove in a later release);
- keep locks short: no table rewrite of a big table in one step, create indexes
  CONCURRENTLY on PostgreSQL in a migration of their own;
- a downgrade undoes exactly what the upgrade did.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import models.base

revision: str = "d122c071de08"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The audit trail is append-only: PostgreSQL refuses to change or delete an outcome row, whatever
# the code (or a hurried operator with psql) tries.
APPEND_ONLY = """
CREATE FUNCTION outcomes_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'outcomes is append-only: % refused', TG_OP;
END
$$;
CREATE TRIGGER outcomes_append_only BEFORE UPDATE OR DELETE ON outcomes
    FOR EACH ROW EXECUTE FUNCTION outcomes_append_only();
"""


def upgrade() -> None:
    op.create_table(
        "inbox_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("dedup_key", sa.String(length=160), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=True),
        sa.Column("type", sa.String(length=40), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("order_ref", sa.String(length=128), nullable=True),
        sa.Column("routing_key", sa.String(length=128), nullable=True),
        sa.Column(
            "payload",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("raw_body", sa.Text(), nullable=True),
        sa.Column("occurred_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("received_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox_events")),
        sa.UniqueConstraint("dedup_key", name=op.f("uq_inbox_events_dedup_key")),
    )
    op.create_index(op.f("ix_inbox_events_event_id"), "inbox_events", ["event_id"], unique=False)
    op.create_index(op.f("ix_inbox_events_order_ref"), "inbox_events", ["order_ref"], unique=False)
    op.create_index(
        op.f("ix_inbox_events_received_at"), "inbox_events", ["received_at"], unique=False
    )
    op.create_table(
        "outcomes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("redemption_id", sa.String(length=128), nullable=True),
        sa.Column("order_ref", sa.String(length=128), nullable=True),
        sa.Column("bill_number", sa.String(length=128), nullable=True),
        sa.Column("bill_id", sa.BigInteger(), nullable=True),
        sa.Column("bill_amount", sa.Numeric(precision=18, scale=4), nullable=True),
        sa.Column("customer", sa.String(length=128), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("code", sa.Integer(), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("request_excerpt", sa.Text(), nullable=True),
        sa.Column("response_excerpt", sa.Text(), nullable=True),
        sa.Column("operator", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outcomes")),
    )
    op.create_index(op.f("ix_outcomes_at"), "outcomes", ["at"], unique=False)
    op.create_index("ix_outcomes_bill_number_at", "outcomes", ["bill_number", "at"], unique=False)
    op.create_index("ix_outcomes_customer_at", "outcomes", ["customer", "at"], unique=False)
    op.create_index("ix_outcomes_order_ref_at", "outcomes", ["order_ref", "at"], unique=False)
    op.create_index(
        "ix_outcomes_redemption_id_at", "outcomes", ["redemption_id", "at"], unique=False
    )
    op.create_index("ix_outcomes_status_at", "outcomes", ["status", "at"], unique=False)
    op.create_table(
        "rate_limits",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("tat", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_limits")),
    )
    op.create_table(
        "transactions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("order_ref", sa.String(length=128), nullable=False),
        sa.Column("bill_number", sa.String(length=128), nullable=False),
        sa.Column("bill_id", sa.BigInteger(), nullable=True),
        sa.Column("bill_amount", sa.Numeric(precision=18, scale=4), nullable=True),
        sa.Column("purpose", sa.String(length=255), nullable=True),
        sa.Column(
            "custom_fields",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("explicit", sa.Boolean(), nullable=False),
        sa.Column("customer_type", sa.String(length=16), nullable=False),
        sa.Column("customer_value", sa.String(length=128), nullable=False),
        sa.Column("occurred_at", models.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transactions")),
        sa.UniqueConstraint("order_ref", name=op.f("uq_transactions_order_ref")),
    )
    op.create_index(
        op.f("ix_transactions_bill_number"), "transactions", ["bill_number"], unique=False
    )
    op.create_index(
        op.f("ix_transactions_created_at"), "transactions", ["created_at"], unique=False
    )
    op.create_index(
        op.f("ix_transactions_customer_value"), "transactions", ["customer_value"], unique=False
    )
    op.create_table(
        "vendor_configs",
        sa.Column("brand_id", sa.BigInteger(), nullable=False),
        sa.Column("config_id", sa.BigInteger(), nullable=False),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=False),
        sa.Column("pushed_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("brand_id", "config_id", name=op.f("pk_vendor_configs")),
    )
    op.create_table(
        "redemptions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("redemption_id", sa.String(length=64), nullable=True),
        sa.Column("external_reference_number", sa.String(length=128), nullable=True),
        sa.Column("order_ref", sa.String(length=128), nullable=False),
        sa.Column("customer_type", sa.String(length=16), nullable=False),
        sa.Column("customer_value", sa.String(length=128), nullable=False),
        sa.Column("points", sa.Numeric(precision=18, scale=3), nullable=True),
        sa.Column("coupon_code", sa.String(length=128), nullable=True),
        sa.Column("program_id", sa.String(length=64), nullable=True),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column(
            "transaction_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.BigInteger(), nullable=False),
        sa.Column("created_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["transactions.id"],
            name=op.f("fk_redemptions_transaction_id_transactions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_redemptions")),
        sa.UniqueConstraint(
            "kind",
            "external_reference_number",
            name=op.f("uq_redemptions_kind_external_reference_number"),
        ),
        sa.UniqueConstraint(
            "kind", "redemption_id", name=op.f("uq_redemptions_kind_redemption_id")
        ),
    )
    op.create_index(op.f("ix_redemptions_created_at"), "redemptions", ["created_at"], unique=False)
    op.create_index(
        op.f("ix_redemptions_customer_value"), "redemptions", ["customer_value"], unique=False
    )
    op.create_index(op.f("ix_redemptions_order_ref"), "redemptions", ["order_ref"], unique=False)
    op.create_index(
        "ix_redemptions_state_updated_at", "redemptions", ["state", "updated_at"], unique=False
    )
    op.create_index(
        op.f("ix_redemptions_transaction_id"), "redemptions", ["transaction_id"], unique=False
    )
    op.create_table(
        "transaction_links",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "transaction_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("redemption_id", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["transactions.id"],
            name=op.f("fk_transaction_links_transaction_id_transactions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transaction_links")),
        sa.UniqueConstraint(
            "kind", "redemption_id", name=op.f("uq_transaction_links_kind_redemption_id")
        ),
    )
    op.create_index(
        op.f("ix_transaction_links_transaction_id"),
        "transaction_links",
        ["transaction_id"],
        unique=False,
    )
    op.create_table(
        "points_redeem_requests",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("external_reference_number", sa.String(length=64), nullable=False),
        sa.Column("order_ref", sa.String(length=128), nullable=False),
        sa.Column("customer_type", sa.String(length=16), nullable=False),
        sa.Column("customer_value", sa.String(length=128), nullable=False),
        sa.Column("points", sa.String(length=40), nullable=False),
        sa.Column("program_id", sa.String(length=64), nullable=True),
        sa.Column("validation_code", sa.String(length=64), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column(
            "custom_fields",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("skip_validation", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.BigInteger(), nullable=False),
        sa.Column("ambiguous", sa.Boolean(), nullable=False),
        sa.Column("redemption_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column(
            "redemption_ref", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["redemption_ref"],
            ["redemptions.id"],
            name=op.f("fk_points_redeem_requests_redemption_ref_redemptions"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_points_redeem_requests")),
        sa.UniqueConstraint("event_id", name=op.f("uq_points_redeem_requests_event_id")),
        sa.UniqueConstraint(
            "external_reference_number",
            name=op.f("uq_points_redeem_requests_external_reference_number"),
        ),
    )
    op.create_index(
        op.f("ix_points_redeem_requests_created_at"),
        "points_redeem_requests",
        ["created_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_points_redeem_requests_customer_value"),
        "points_redeem_requests",
        ["customer_value"],
        unique=False,
    )
    op.create_index(
        op.f("ix_points_redeem_requests_order_ref"),
        "points_redeem_requests",
        ["order_ref"],
        unique=False,
    )
    op.create_index(
        "ix_points_redeem_requests_state_updated_at",
        "points_redeem_requests",
        ["state", "updated_at"],
        unique=False,
    )

    if op.get_bind().dialect.name == "postgresql":
        op.execute(APPEND_ONLY)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS outcomes_append_only ON outcomes")
        op.execute("DROP FUNCTION IF EXISTS outcomes_append_only()")
    op.drop_index("ix_points_redeem_requests_state_updated_at", table_name="points_redeem_requests")
    op.drop_index(op.f("ix_points_redeem_requests_order_ref"), table_name="points_redeem_requests")
    op.drop_index(
        op.f("ix_points_redeem_requests_customer_value"), table_name="points_redeem_requests"
    )
    op.drop_index(op.f("ix_points_redeem_requests_created_at"), table_name="points_redeem_requests")
    op.drop_table("points_redeem_requests")
    op.drop_index(op.f("ix_transaction_links_transaction_id"), table_name="transaction_links")
    op.drop_table("transaction_links")
    op.drop_index(op.f("ix_redemptions_transaction_id"), table_name="redemptions")
    op.drop_index("ix_redemptions_state_updated_at", table_name="redemptions")
    op.drop_index(op.f("ix_redemptions_order_ref"), table_name="redemptions")
    op.drop_index(op.f("ix_redemptions_customer_value"), table_name="redemptions")
    op.drop_index(op.f("ix_redemptions_created_at"), table_name="redemptions")
    op.drop_table("redemptions")
    op.drop_table("vendor_configs")
    op.drop_index(op.f("ix_transactions_customer_value"), table_name="transactions")
    op.drop_index(op.f("ix_transactions_created_at"), table_name="transactions")
    op.drop_index(op.f("ix_transactions_bill_number"), table_name="transactions")
    op.drop_table("transactions")
    op.drop_table("rate_limits")
    op.drop_index("ix_outcomes_status_at", table_name="outcomes")
    op.drop_index("ix_outcomes_redemption_id_at", table_name="outcomes")
    op.drop_index("ix_outcomes_order_ref_at", table_name="outcomes")
    op.drop_index("ix_outcomes_customer_at", table_name="outcomes")
    op.drop_index("ix_outcomes_bill_number_at", table_name="outcomes")
    op.drop_index(op.f("ix_outcomes_at"), table_name="outcomes")
    op.drop_table("outcomes")
    op.drop_index(op.f("ix_inbox_events_received_at"), table_name="inbox_events")
    op.drop_index(op.f("ix_inbox_events_order_ref"), table_name="inbox_events")
    op.drop_index(op.f("ix_inbox_events_event_id"), table_name="inbox_events")
    op.drop_table("inbox_events")
