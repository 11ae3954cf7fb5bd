"""The record of one call to the platform: what the audit trail, the errors and the metrics keep.

It depends on nothing else of the client, so the error tree and the envelope readers can name it
without importing the result types that depend on them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Exchange:
    """One HTTP call as the audit trail records it; excerpts are redacted, at most 2,000 chars."""

    method: str
    path: str
    http_status: int | None
    request_id: str | None
    elapsed_ms: float
    request_excerpt: str
    response_excerpt: str
