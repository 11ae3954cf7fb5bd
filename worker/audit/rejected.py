"""Messages the intake rejected, on record in the inbox, with a safe excerpt of each body."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.events import REJECTED, InboxEvent
from worker.loyalty.redact import redact_text

REJECTED_FIELDS = (
    "received_at", "event_id", "routing_key", "reason", "size", "excerpt",
)  # fmt: skip
EXCERPT_CHARS = 200


def rejected_messages(
    *,
    session: Session,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int | None = None,
    before: tuple[dt.datetime, int] | None = None,
) -> list[dict[str, Any]]:
    """Rejected intake messages, newest first (index: status, received_at).

    ``before`` is the (received_at, id) of the last row of the previous page (keyset paging).
    """
    stmt = select(
        InboxEvent.id,
        InboxEvent.received_at,
        InboxEvent.event_id,
        InboxEvent.routing_key,
        InboxEvent.reason,
        # Bytes as they arrived; rows stored before body_size existed give their excerpt's length.
        func.coalesce(InboxEvent.body_size, func.length(InboxEvent.raw_body)).label("size"),
        func.substr(InboxEvent.raw_body, 1, EXCERPT_CHARS * 2).label("head"),
    ).where(InboxEvent.status == REJECTED)
    if since is not None:
        stmt = stmt.where(InboxEvent.received_at >= since)
    if until is not None:
        stmt = stmt.where(InboxEvent.received_at < until)
    if before is not None:
        at, row_id = before
        stmt = stmt.where(
            (InboxEvent.received_at < at)
            | ((InboxEvent.received_at == at) & (InboxEvent.id < row_id))
        )
    stmt = stmt.order_by(InboxEvent.received_at.desc(), InboxEvent.id.desc())
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = []
    for row in session.execute(stmt).mappings():
        item = dict(row)
        item["excerpt"] = safe_excerpt(item.pop("head"))
        rows.append(item)
    return rows


def safe_excerpt(text: str | None, limit: int = EXCERPT_CHARS) -> str:
    """Printable, credential-masked, short: control and odd characters shown as escapes."""
    if not text:
        return ""
    shown = "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in redact_text(text)
    )
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"
