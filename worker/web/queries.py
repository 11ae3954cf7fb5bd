"""Everything the pages ask the database, and the read-only session they ask it in.

The page's own lookups (search, an order with its links, bills and redemptions by name) are here;
the outcome, rejected and open-work lists are ``worker.audit``'s, the same the CLI runs. Every
query has a LIMIT; lists page by keyset (the last row's time and id), never by OFFSET over a big
table; windows are checked by ``worker.web.params`` before any query runs.

The session cannot write: on PostgreSQL every transaction of the page's connections is read-only
with a statement time-out; on SQLite the connections are ``PRAGMA query_only``.
"""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import Any

from flask import current_app, g
from sqlalchemy import Engine, event, or_, select
from sqlalchemy.orm import Session

from models.operator_log import OperatorAction
from models.outcomes import Outcome
from models.redemptions import COUPON, POINTS, PointsRedeemRequest, Redemption
from models.session import build_engine, normalise_url, primary_not_writable, session_factory
from models.transactions import Transaction, TransactionLink
from worker.audit import (
    count_outcomes,
    failed_outcomes,
    outcomes_for_bill,
    outcomes_for_customer,
    outcomes_for_order,
    outcomes_for_redemption,
    rejected_messages,
    unmatched_work,
    unresolved_unknown_requests,
)

__all__ = [
    "count_outcomes",
    "failed_outcomes",
    "outcomes_for_bill",
    "outcomes_for_customer",
    "outcomes_for_order",
    "outcomes_for_redemption",
    "rejected_messages",
    "unmatched_work",
    "unresolved_unknown_requests",
]

#: No single query of a page may run longer than this on PostgreSQL.
STATEMENT_TIMEOUT_MS = 5000

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def read_only_engine(url: str) -> Engine:
    """The page's engine for ``url`` (one per process): its connections cannot write."""
    with _engines_lock:
        if url not in _engines:
            _engines[url] = _build_read_only(url)
        return _engines[url]


def _build_read_only(url: str) -> Engine:
    if normalise_url(url).startswith("sqlite"):
        engine = build_engine(url)

        @event.listens_for(engine, "connect")
        def _query_only(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA query_only = ON")
            cursor.close()

        return engine
    # Set when the connection opens, so each request pays no extra round trip for it.
    options = f"-c default_transaction_read_only=on -c statement_timeout={STATEMENT_TIMEOUT_MS}"
    # A page is read by a person: a ping at every checkout costs little here, and a connection a
    # database restart ended is replaced before a page meets it (the workers only ping idle ones).
    return build_engine(
        primary_not_writable(url), connect_args={"options": options}, pool_pre_ping=True
    )


def db() -> Session:
    """The request's session (opened on first use, closed when the request ends)."""
    if "recon_session" not in g:
        url = current_app.config["RECON_SETTINGS"].database_url
        g.recon_session = session_factory(read_only_engine(url))()
    session: Session = g.recon_session
    return session


def close_session(_: BaseException | None = None) -> None:
    session = g.pop("recon_session", None)
    if session is not None:
        session.close()  # rolls back: nothing a page did is ever committed


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
