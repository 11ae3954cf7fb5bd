"""Work that waits for someone: unresolved ``unknown`` redeem requests, and unmatched halves."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import Session

from models.outcomes import Outcome
from models.redemptions import UNKNOWN, PointsRedeemRequest, Redemption
from models.transactions import Transaction, TransactionLink

UNKNOWN_FIELDS = (
    "event_id", "order_ref", "customer", "points", "external_reference_number", "attempts",
    "last_outcome_at", "last_message",
)  # fmt: skip
UNMATCHED_FIELDS = (
    "case", "kind", "redemption_id", "order_ref", "customer", "bill_number", "recorded_at",
)  # fmt: skip

#: `case` of a redemption that no bill has claimed yet.
REDEMPTION_WITHOUT_BILL = "redemption_without_bill"
#: `case` of a redemption a bill listed explicitly that never arrived.
LISTED_REDEMPTION_MISSING = "listed_redemption_missing"


def unresolved_unknown_requests(
    *, session: Session, limit: int | None = None, offset: int = 0
) -> list[dict[str, Any]]:
    """Points redeem requests whose latest word is ``unknown``, oldest first (index: state)."""
    request = PointsRedeemRequest

    # `state` is the latest word: `recon resolve` moves it on, so `unknown` here means no
    # operator has decided yet. The last outcome's message says why it is unknown.
    # Correlated scalar subqueries, not a LATERAL join: SQLite (the embedded default) has no
    # LATERAL, and both databases serve these from the (order_ref, at) index.
    def last_outcome(column: Any) -> Any:
        return (
            select(column)
            .where(
                Outcome.order_ref == request.order_ref,  # index: order_ref, at
                Outcome.kind == "points_redeem",
                Outcome.event_id == request.event_id,
            )
            .order_by(Outcome.at.desc(), Outcome.id.desc())
            .limit(1)
            .correlate(request)
            .scalar_subquery()
        )

    stmt = (
        select(
            request.event_id,
            request.order_ref,
            request.customer_value.label("customer"),
            request.points_text.label("points"),  # as the event sent it
            request.external_reference_number,
            request.attempts,
            last_outcome(Outcome.at).label("last_outcome_at"),
            func.coalesce(last_outcome(Outcome.message), request.last_error).label("last_message"),
        )
        .where(request.state == UNKNOWN)
        .order_by(request.updated_at, request.id)
        .offset(offset)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    return [dict(row) for row in session.execute(stmt).mappings()]


def unmatched_work(
    *, session: Session, older_than: dt.datetime, limit: int | None = None
) -> list[dict[str, Any]]:
    """Redemptions no bill claimed, and redemptions a bill listed that never arrived."""
    # Both halves wait `older_than`: events may arrive in any order, so a redemption seconds
    # ahead of its bill (or a bill seconds ahead of its redemptions) is not news.
    orphans = (
        select(
            Redemption.kind,
            func.coalesce(Redemption.redemption_id, Redemption.external_reference_number).label(
                "redemption_id"
            ),
            Redemption.order_ref,
            Redemption.customer_value.label("customer"),
            Redemption.created_at.label("recorded_at"),
        )
        .where(Redemption.transaction_id.is_(None))  # index: transaction_id
        .where(Redemption.created_at < older_than)
        .order_by(Redemption.created_at, Redemption.id)
    )
    arrived = exists().where(  # unique index: redemptions (kind, redemption_id)
        and_(
            Redemption.kind == TransactionLink.kind,
            Redemption.redemption_id == TransactionLink.redemption_id,
        )
    )
    missing = (
        select(
            TransactionLink.kind,
            TransactionLink.redemption_id,
            Transaction.order_ref,
            Transaction.customer_value.label("customer"),
            Transaction.bill_number,
            Transaction.created_at.label("recorded_at"),
        )
        .join(Transaction, Transaction.id == TransactionLink.transaction_id)
        .where(~arrived)
        .where(Transaction.created_at < older_than)
        .order_by(Transaction.created_at, TransactionLink.id)
    )
    if limit is not None:
        orphans = orphans.limit(limit)
        missing = missing.limit(limit)
    rows = [
        {"case": REDEMPTION_WITHOUT_BILL, "bill_number": None, **row}
        for row in session.execute(orphans).mappings()
    ]
    rows += [
        {"case": LISTED_REDEMPTION_MISSING, **row} for row in session.execute(missing).mappings()
    ]
    rows.sort(key=lambda row: row["recorded_at"])
    return rows[:limit] if limit is not None else rows
