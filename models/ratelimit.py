"""State of the global rate limiter: a ring of slots per API key, and one row of demand per key.

See ``worker/budget/limiter.py`` for why a ring: a slot is free when its last use is at least one
window old, so a key with ``limit`` slots can never have more than ``limit`` uses in a window.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Double, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class RateLimitState(Base):
    """Per API key: when live work last had to wait for a slot (it caps re-driven work), and
    the pause after a 429."""

    __tablename__ = "rate_limits"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    # The GCRA limiter's state, no longer used: kept nullable while old workers may still run
    # during a rolling upgrade (add first, remove in a later release).
    tat: Mapped[float | None] = mapped_column(Double, nullable=True)
    # Seconds since the epoch of the database clock; null: live work never waited.
    live_waited_at: Mapped[float | None] = mapped_column(Double, nullable=True)
    # After a 429: no process sends on the key before this (database clock, epoch seconds).
    paused_until: Mapped[float | None] = mapped_column(Double, nullable=True)
    # The last return time handed to a deferred request (database clock, epoch seconds): the
    # next one is a slot's interval later, so deferred requests do not come back as a herd.
    deferred_until: Mapped[float | None] = mapped_column(Double, nullable=True)
    # Live takes are paced to the average rate until then: set two turns ahead by a live
    # request (taken or refused) that finds more calls open than a turn of the ring serves, and
    # set again when it has passed while the backlog lasts (``worker/budget/limiter.py``, "Even
    # once saturated").
    paced_until: Mapped[float | None] = mapped_column(Double, nullable=True)


class RateLimitSlot(Base):
    """One slot of a key's ring; ``used_at`` is its last use on the database clock."""

    __tablename__ = "rate_limit_slots"
    __table_args__ = (Index("ix_rate_limit_slots_key_used_at", "key", "used_at"),)

    # The API key, or the API key plus the name of a smoothing ring ("key/burst").
    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    slot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    used_at: Mapped[float] = mapped_column(Double, default=0.0)
    # Taken by re-driven work (backfill, sweeper): counted against its share of the budget.
    redriven: Mapped[bool] = mapped_column(Boolean, default=False)
