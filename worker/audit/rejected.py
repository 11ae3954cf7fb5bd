"""Messages the intake rejected, on record in the inbox, with a safe excerpt of each body."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models.events import REJECTED, InboxEvent
from worker.observe.masking import shown, shown_excerpt

REJECTED_FIELDS = (
    "received_at", "event_id", "routing_key", "reason", "size", "excerpt",
)  # fmt: skip
EXCERPT_CHARS = 200
MAX_SHOWN = 2_000


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
        # Everything but our own numbers and times came from the publisher: masked and escaped.
        for name in ("event_id", "routing_key", "reason"):
            item[name] = shown(item[name], MAX_SHOWN) if item[name] is not None else None
        item["excerpt"] = shown_excerpt(item.pop("head"), EXCERPT_CHARS)
        rows.append(item)
    return rows
