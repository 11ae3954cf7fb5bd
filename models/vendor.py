"""What was last pushed successfully of each vendor redemption configuration."""

from __future__ import annotations

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, utc_time, utcnow


class VendorConfigState(Base):
    __tablename__ = "vendor_configs"

    brand_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    config_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    # HMAC-SHA256 (keyed by RECON_VENDOR_DIGEST_KEY) of the canonical JSON sent: secrets are
    # digested in, never stored, and cannot be guessed from the row. Named before it was keyed.
    content_sha256: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(255))
    pushed_at: Mapped[utc_time] = mapped_column(default=utcnow)
