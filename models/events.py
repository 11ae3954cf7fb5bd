"""The inbox: every message the intake consumer received, stored before it is acknowledged."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, intpk, utc_time, utcnow

ACCEPTED = "accepted"
REJECTED = "rejected"


class InboxEvent(Base):
    __tablename__ = "inbox_events"
    # Rejected messages, newest first in a window (`recon audit rejected`, the web page).
    __table_args__ = (Index("ix_inbox_events_status_received_at", "status", "received_at"),)

    id: Mapped[intpk]
    # The idempotency key: the event's own event_id, or for a message without a usable one a
    # hash of its body, so a redelivered malformed message is not stored twice either.
    dedup_key: Mapped[str] = mapped_column(String(160), unique=True)
    event_id: Mapped[str | None] = mapped_column(String(128), index=True)
    type: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    order_ref: Mapped[str | None] = mapped_column(String(128), index=True)
    routing_key: Mapped[str | None] = mapped_column(String(128))
    payload: Mapped[dict[str, Any] | None]
    # What arrived, for a message that is not a storable event: a readable excerpt (bad bytes and
    # NUL escaped, since PostgreSQL refuses NUL in text), and the bytes themselves.
    raw_body: Mapped[str | None] = mapped_column(Text)
    raw_bytes: Mapped[bytes | None] = mapped_column(LargeBinary)
    body_size: Mapped[int | None] = mapped_column(Integer)
    body_sha256: Mapped[str | None] = mapped_column(String(64))
    occurred_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    received_at: Mapped[utc_time] = mapped_column(default=utcnow, index=True)
