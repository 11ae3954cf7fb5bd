"""Small shapes the platform uses in its answers: numeric ids, epoch milliseconds, ISO times."""

from __future__ import annotations

import time
import zlib
from datetime import UTC, datetime
from decimal import Decimal


def stable_id(text: str, base: int = 100_000_000, span: int = 900_000_000) -> int:
    """A numeric id that is the same for the same text across runs and resets (customer, till)."""
    return base + zlib.crc32(text.encode()) % span


def customer_id(identifier_type: str, value: str) -> int:
    return stable_id(f"{identifier_type}:{value}")


def till_id(api_key: str | None) -> int:
    return stable_id(f"till:{api_key or ''}", base=75_000_000, span=1_000_000)


def epoch_ms() -> int:
    return int(time.time() * 1000)


def iso_utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def plain_number(value: Decimal) -> int | float:
    """Points as the v1.1 page prints them: 1 not 1.0, 2.5 as 2.5."""
    return int(value) if value == value.to_integral_value() else float(value)
