"""State of the global rate limiter: one row per API key."""

from __future__ import annotations

from sqlalchemy import Double, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class RateLimitState(Base):
    __tablename__ = "rate_limits"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    # GCRA's theoretical arrival time, in seconds since the epoch of the database clock.
    tat: Mapped[float] = mapped_column(Double)
