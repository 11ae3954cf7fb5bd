"""What the pages ask the database, on top of ``worker.audit``; every query has a LIMIT.

Lists page by keyset (the last row's time and id), never by OFFSET over a big table; windows are
checked against ``MAX_WINDOW`` by the views before any query runs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from models.operator_log import OperatorAction
from models.outcomes import Outcome
from models.redemptions import COUPON, POINTS, PointsRedeemRequest, Redemption
from models.transactions import Transaction, TransactionLink
from worker.audit.open_work import unresolved_unknown_requests
from worker.audit.outcomes import FAILURE_STATUSES

#: Rows of one timeline (an order, a bill, a redemption); more is cut with a note.
TIMELINE_LIMIT = 500
#: Orders, bills or redemptions one search may list.
MATCH_LIMIT = 20
#: The unique indexes on redemptions lead with `kind`: naming every kind lets them serve a
#: lookup by id alone.
REDEMPTION_KINDS = (COUPON, POINTS)


@dataclass
class Matches:
    """What a search text names: orders, bills, redemptions, a customer."""

    orders: list[str] = field(default_factory=list)
    bills: list[str] = field(default_factory=list)
    redemptions: list[dict[str, Any]] = field(default_factory=list)
    customer: bool = False

    @property
    def count(self) -> int:
        return len(self.orders) + len(self.bills) + len(self.redemptions) + int(self.customer)


def search(session: Session, text: str) -> Matches:
    """Each lookup is an equality on an indexed column, so a search costs a few index probes."""
    found = Matches()
    orders = set(
        session.scalars(select(Transaction.order_ref).where(Transaction.order_ref == text).limit(1))
    )
    orders |= set(
        session.scalars(select(Redemption.order_ref).where(Redemption.order_ref == text).limit(1))
    )
    orders |= set(
        session.scalars(select(Outcome.order_ref).where(Outcome.order_ref == text).limit(1))
    )
    found.orders = sorted(o for o in orders if o)
    bills = set(
        session.scalars(
            select(Transaction.bill_number).where(Transaction.bill_number == text).limit(1)
        )
    )
    bills |= set(
        session.scalars(select(Outcome.bill_number).where(Outcome.bill_number == text).limit(1))
    )
    found.bills = sorted(b for b in bills if b)
    found.redemptions = [
        dict(row)
        for row in session.execute(
            select(Redemption.kind, Redemption.redemption_id, Redemption.order_ref)
            .where(
                Redemption.kind.in_(REDEMPTION_KINDS),
                or_(
                    Redemption.redemption_id == text,
                    Redemption.external_reference_number == text,
                ),
            )
            .limit(MATCH_LIMIT)
        ).mappings()
    ]
    if not found.redemptions:
        seen = session.scalars(
            select(Outcome.kind).where(Outcome.redemption_id == text).limit(1)
        ).first()
        if seen is not None:
            found.redemptions = [{"kind": seen, "redemption_id": text, "order_ref": None}]
    found.customer = any(
        session.scalars(select(column).where(column == text).limit(1)).first() is not None
        for column in (Transaction.customer_value, Redemption.customer_value, Outcome.customer)
    )
    return found


def order_view(session: Session, order_ref: str) -> dict[str, Any]:
    """An order: its bill, its redemptions and redeem requests, and the links between them."""
    bill = session.scalars(select(Transaction).where(Transaction.order_ref == order_ref)).first()
    redemptions = list(
        session.scalars(
            select(Redemption)
            .where(Redemption.order_ref == order_ref)
            .order_by(Redemption.created_at, Redemption.id)
            .limit(TIMELINE_LIMIT)
        )
    )
    requests = list(
        session.scalars(
            select(PointsRedeemRequest)
            .where(PointsRedeemRequest.order_ref == order_ref)
            .order_by(PointsRedeemRequest.created_at, PointsRedeemRequest.id)
            .limit(TIMELINE_LIMIT)
        )
    )
    listed: list[TransactionLink] = []
    if bill is not None:
        listed = list(
            session.scalars(
                select(TransactionLink)
                .where(TransactionLink.transaction_id == bill.id)
                .order_by(TransactionLink.id)
                .limit(TIMELINE_LIMIT)
            )
        )
    arrived = {(r.kind, r.redemption_id) for r in redemptions}
    return {
        "bill": bill,
        "redemptions": redemptions,
        "requests": requests,
        "listed": [
            {"kind": link.kind, "redemption_id": link.redemption_id,
             "arrived": (link.kind, link.redemption_id) in arrived}
            for link in listed
        ],
    }  # fmt: skip


def bills_named(session: Session, bill_number: str) -> list[Transaction]:
    return list(
        session.scalars(
            select(Transaction)
            .where(Transaction.bill_number == bill_number)
            .order_by(Transaction.created_at, Transaction.id)
            .limit(MATCH_LIMIT)
        )
    )


def redemptions_named(session: Session, redemption_id: str) -> list[Redemption]:
    return list(
        session.scalars(
            select(Redemption)
            .where(
                Redemption.kind.in_(REDEMPTION_KINDS),
                or_(
                    Redemption.redemption_id == redemption_id,
                    Redemption.external_reference_number == redemption_id,
                ),
            )
            .order_by(Redemption.id)
            .limit(MATCH_LIMIT)
        )
    )


def bill_by_id(session: Session, transaction_id: int | None) -> Transaction | None:
    if transaction_id is None:
        return None
    return session.get(Transaction, transaction_id)


def failures_page(
    session: Session,
    *,
    since: dt.datetime,
    until: dt.datetime,
    before: tuple[dt.datetime, int] | None,
    size: int,
) -> list[Outcome]:
    """Failed and gave_up outcomes, newest first, one page (index: status, at)."""
    stmt = select(Outcome).where(
        Outcome.status.in_(FAILURE_STATUSES), Outcome.at >= since, Outcome.at < until
    )
    return _newest_first_page(session, stmt, before=before, size=size)


def customer_page(
    session: Session,
    *,
    customer: str,
    since: dt.datetime,
    until: dt.datetime,
    before: tuple[dt.datetime, int] | None,
    size: int,
) -> list[Outcome]:
    """A customer's outcomes, newest first, one page (index: customer, at)."""
    stmt = select(Outcome).where(
        Outcome.customer == customer, Outcome.at >= since, Outcome.at < until
    )
    return _newest_first_page(session, stmt, before=before, size=size)


def _newest_first_page(
    session: Session, stmt: Any, *, before: tuple[dt.datetime, int] | None, size: int
) -> list[Outcome]:
    """One keyset page of outcomes, newest first, after the (at, id) the last page ended on."""
    if before is not None:
        at, row_id = before
        stmt = stmt.where((Outcome.at < at) | ((Outcome.at == at) & (Outcome.id < row_id)))
    stmt = stmt.order_by(Outcome.at.desc(), Outcome.id.desc()).limit(size)
    return list(session.scalars(stmt))


def unknown_page(session: Session, *, offset: int, size: int) -> list[dict[str, Any]]:
    """Unresolved ``unknown`` redeem requests, oldest first: the CLI's own query, one page."""
    return unresolved_unknown_requests(session=session, limit=size, offset=offset)


def operator_log_page(
    session: Session, *, before: tuple[dt.datetime, int] | None, size: int
) -> list[OperatorAction]:
    """What operators did to messages (replays, purges), newest first (index: at)."""
    stmt = select(OperatorAction)
    if before is not None:
        at, row_id = before
        stmt = stmt.where(
            (OperatorAction.at < at) | ((OperatorAction.at == at) & (OperatorAction.id < row_id))
        )
    stmt = stmt.order_by(OperatorAction.at.desc(), OperatorAction.id.desc()).limit(size)
    return list(session.scalars(stmt))
