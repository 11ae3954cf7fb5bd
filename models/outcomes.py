"""The audit trail: one row per attempt and per item; rows are only ever added."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import BigInteger, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, intpk, money, utc_time, utcnow

KINDS = ("coupon", "points", "points_redeem", "vendor")
STATUSES = ("succeeded", "failed", "retrying", "gave_up", "unknown", "skipped")
#: What the failures list shows; the partial index below holds exactly these rows.
FAILURE_STATUSES = ("failed", "gave_up")
_FAILURES = text("status IN ('failed', 'gave_up')")


class Outcome(Base):
    __tablename__ = "outcomes"
    __table_args__ = (
        Index("ix_outcomes_status_at", "status", "at"),
        Index("ix_outcomes_bill_number_at", "bill_number", "at"),
        Index("ix_outcomes_redemption_id_at", "redemption_id", "at"),
        Index("ix_outcomes_order_ref_at", "order_ref", "at"),
        Index("ix_outcomes_customer_at", "customer", "at"),
        # The audit page's summary: counted from the index alone, without visiting the table.
        Index("ix_outcomes_at_kind_status_code", "at", "kind", "status", "code"),
        # The failures list (`recon audit failures`, newest first, a window, a limit): a day holds
        # a few thousand failures among ~30k rows. On (status, at) the two statuses come out of
        # two ranges that must be merged and sorted before the limit applies; this index holds
        # only failures, already in the list's order, so the scan stops at the limit.
        Index(
            "ix_outcomes_failures_at_id",
            "at",
            "id",
            postgresql_where=_FAILURES,
            sqlite_where=_FAILURES,
        ),
    )

    id: Mapped[intpk]
    at: Mapped[utc_time] = mapped_column(default=utcnow, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    redemption_id: Mapped[str | None] = mapped_column(String(128))
    order_ref: Mapped[str | None] = mapped_column(String(128))
    bill_number: Mapped[str | None] = mapped_column(String(128))
    bill_id: Mapped[int | None] = mapped_column(BigInteger)
    bill_amount: Mapped[money | None]
    customer: Mapped[str | None] = mapped_column(String(128))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    http_status: Mapped[int | None] = mapped_column(Integer)
    code: Mapped[int | None] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str | None] = mapped_column(String(128))
    request_id: Mapped[str | None] = mapped_column(String(128))
    request_excerpt: Mapped[str | None] = mapped_column(Text)
    response_excerpt: Mapped[str | None] = mapped_column(Text)
    # Who decided, for rows an operator added with `recon resolve`.
    operator: Mapped[str | None] = mapped_column(String(128))

    AUDIT_FIELDS = (
        "at",
        "kind",
        "redemption_id",
        "order_ref",
        "bill_number",
        "bill_id",
        "bill_amount",
        "customer",
        "attempt",
        "http_status",
        "code",
        "message",
        "status",
        "event_id",
        "request_id",
        "request_excerpt",
        "response_excerpt",
        "operator",
    )

    def as_row(self) -> dict[str, object]:
        row: dict[str, object] = {}
        for name in self.AUDIT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, Decimal):
                value = str(value)
            elif hasattr(value, "isoformat"):
                value = value.isoformat()
            row[name] = value
        return row
