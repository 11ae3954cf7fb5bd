"""Completed bills, and the redemptions a bill lists explicitly."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, UTCDateTime, intpk, money, str255, utc_time, utcnow


class Transaction(Base):
    __tablename__ = "transactions"

    id: Mapped[intpk]
    event_id: Mapped[str] = mapped_column(String(128))
    # One bill per order: the first transaction.completed of an order wins (see README).
    order_ref: Mapped[str] = mapped_column(String(128), unique=True)
    bill_number: Mapped[str] = mapped_column(String(128), index=True)
    # The platform's bill id is a Java long: a positive integer of at most 19 digits.
    bill_id: Mapped[int | None] = mapped_column(BigInteger)
    bill_amount: Mapped[money | None]
    purpose: Mapped[str255 | None]
    custom_fields: Mapped[dict[str, Any] | None]
    # True when the event listed its redemptions; then only those belong to the bill.
    explicit: Mapped[bool] = mapped_column(default=False)
    customer_type: Mapped[str] = mapped_column(String(16))
    customer_value: Mapped[str] = mapped_column(String(128), index=True)
    occurred_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[utc_time] = mapped_column(default=utcnow, index=True)

    links: Mapped[list[TransactionLink]] = relationship(
        back_populates="transaction", cascade="all, delete-orphan"
    )

    @property
    def amount_or_zero(self) -> Decimal:
        return self.bill_amount if self.bill_amount is not None else Decimal(0)


class TransactionLink(Base):
    """A redemption a bill names explicitly; it may arrive before or after the bill."""

    __tablename__ = "transaction_links"
    __table_args__ = (UniqueConstraint("kind", "redemption_id"),)

    id: Mapped[intpk]
    transaction_id: Mapped[int] = mapped_column(
        ForeignKey("transactions.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    redemption_id: Mapped[str] = mapped_column(String(64))

    transaction: Mapped[Transaction] = relationship(back_populates="links")
