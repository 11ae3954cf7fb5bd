"""Redemptions made before the bill existed, and requests to redeem points."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, intpk, points, utc_time, utcnow

COUPON = "coupon"
POINTS = "points"

# Work states. The outcomes table is the history; `state` is its latest word, kept on the row
# so the sweeper, the backfill and the audit's `unmatched` find open work through an index
# instead of scanning the history.
PENDING = "pending"
IN_FLIGHT = "in_flight"
SUCCEEDED = "succeeded"
FAILED = "failed"
RETRYING = "retrying"
GAVE_UP = "gave_up"
UNKNOWN = "unknown"
SKIPPED = "skipped"
OPEN_STATES = (PENDING, RETRYING, GAVE_UP)

_BILLED = text("transaction_id IS NOT NULL")
_UNBILLED = text("transaction_id IS NULL")


class Redemption(Base):
    __tablename__ = "redemptions"
    __table_args__ = (
        UniqueConstraint("kind", "redemption_id"),
        UniqueConstraint("kind", "external_reference_number"),
        Index("ix_redemptions_state_updated_at", "state", "updated_at"),
        # The metrics' gauges, read on every scrape: open work that has its bill, oldest first,
        # and redemptions still waiting for one. Partial, so neither walks past the other.
        Index(
            "ix_redemptions_billed_state_created_at",
            "state",
            "created_at",
            postgresql_where=_BILLED,
            sqlite_where=_BILLED,
        ),
        Index(
            "ix_redemptions_unbilled_kind_created_at",
            "kind",
            "created_at",
            postgresql_where=_UNBILLED,
            sqlite_where=_UNBILLED,
        ),
    )

    id: Mapped[intpk]
    kind: Mapped[str] = mapped_column(String(16))
    # The platform's id: an integer for coupons, a short string for points.
    redemption_id: Mapped[str | None] = mapped_column(String(64))
    external_reference_number: Mapped[str | None] = mapped_column(String(128))
    order_ref: Mapped[str] = mapped_column(String(128), index=True)
    customer_type: Mapped[str] = mapped_column(String(16))
    customer_value: Mapped[str] = mapped_column(String(128), index=True)
    points: Mapped[points | None]
    coupon_code: Mapped[str | None] = mapped_column(String(128))
    program_id: Mapped[str | None] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(128))
    transaction_id: Mapped[int | None] = mapped_column(
        ForeignKey("transactions.id", ondelete="SET NULL"), index=True
    )
    state: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[utc_time] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[utc_time] = mapped_column(default=utcnow, onupdate=utcnow)

    @property
    def platform_ref(self) -> str:
        return self.redemption_id or self.external_reference_number or f"#{self.id}"


class PointsRedeemRequest(Base):
    """A `points.redeem_requested` event: spends a customer's points, so it must happen once."""

    __tablename__ = "points_redeem_requests"
    __table_args__ = (
        Index("ix_points_redeem_requests_state_updated_at", "state", "updated_at"),
        Index("ix_points_redeem_requests_state_created_at", "state", "created_at"),
    )

    id: Mapped[intpk]
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    # Derived from event_id; the platform de-duplicates on it, so every retry reuses it.
    external_reference_number: Mapped[str] = mapped_column(String(64), unique=True)
    order_ref: Mapped[str] = mapped_column(String(128), index=True)
    customer_type: Mapped[str] = mapped_column(String(16))
    customer_value: Mapped[str] = mapped_column(String(128), index=True)
    # As sent, exact to the last digit: the 878 rule (at most 3 decimals) is judged on it.
    points_text: Mapped[str] = mapped_column("points", String(40))
    program_id: Mapped[str | None] = mapped_column(String(64))
    validation_code: Mapped[str | None] = mapped_column(String(64))
    notes: Mapped[str | None] = mapped_column(Text)
    custom_fields: Mapped[dict[str, Any] | None]
    skip_validation: Mapped[bool] = mapped_column(default=False)
    state: Mapped[str] = mapped_column(String(16), default=PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    # Set once any attempt may have reached the platform without a settled answer.
    ambiguous: Mapped[bool] = mapped_column(default=False)
    redemption_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[utc_time] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[utc_time] = mapped_column(default=utcnow, onupdate=utcnow)
    redemption_ref: Mapped[int | None] = mapped_column(
        ForeignKey("redemptions.id", ondelete="SET NULL")
    )
    last_error: Mapped[str | None] = mapped_column(Text)

    @property
    def points(self) -> Decimal:
        return Decimal(self.points_text)
