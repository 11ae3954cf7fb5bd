"""Lookups over the append-only ``outcomes`` table: by key, failures, counts and a full export."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from sqlalchemy import BindParameter, ColumnElement, Select, bindparam, func, select
from sqlalchemy.orm import Session

from models.outcomes import FAILURE_STATUSES, Outcome

SUMMARY_FIELDS = ("kind", "status", "code", "count")
#: Where a newest-first page ended: the last row's (at, id).
Cursor = tuple[dt.datetime, int]


def outcomes_for_bill(
    *,
    session: Session,
    bill_number: str,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int | None = None,
) -> list[Outcome]:
    """Every outcome recorded for a bill, oldest first (index: bill_number, at)."""
    return _history(session, Outcome.bill_number == bill_number, since, until, limit)


def outcomes_for_redemption(
    *,
    session: Session,
    redemption_id: str,
    kind: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int | None = None,
) -> list[Outcome]:
    """Every outcome of one platform redemption id, oldest first (index: redemption_id, at)."""
    # Coupon ids, points ids and vendor configuration ids live in different number spaces, so
    # the same text may name several things; `kind` narrows it.
    condition = Outcome.redemption_id == redemption_id
    if kind is not None:
        condition = condition & (Outcome.kind == kind)
    return _history(session, condition, since, until, limit)


def outcomes_for_order(
    *,
    session: Session,
    order_ref: str,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int | None = None,
) -> list[Outcome]:
    """Every outcome of an order, oldest first (index: order_ref, at)."""
    return _history(session, Outcome.order_ref == order_ref, since, until, limit)


def outcomes_for_customer(
    *,
    session: Session,
    customer: str,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int | None = None,
    newest_first: bool = False,
    before: Cursor | None = None,
) -> list[Outcome]:
    """Every outcome of a customer (identifier value), oldest first (index: customer, at).

    ``newest_first`` turns the order round; ``before`` then continues after the (at, id) the
    previous page ended on (keyset paging: the audit page).
    """
    condition = Outcome.customer == customer
    if not newest_first:
        return _history(session, condition, since, until, limit)
    stmt = select(Outcome).where(condition, *_within(since, until))
    return _newest_first(session, stmt, before=before, limit=limit)


def failed_outcomes(
    *,
    session: Session,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: int | None = None,
    before: Cursor | None = None,
) -> list[Outcome]:
    """Outcomes that are ``failed`` or ``gave_up``, newest first (index: the failures' own,
    partial, on at and id).

    ``before`` is the (at, id) of the last row of the previous page (keyset paging).
    """
    # The statuses go into the SQL as literals: PostgreSQL uses a partial index only where it can
    # prove the predicate, and a prepared statement's generic plan cannot see bound values.
    failures: BindParameter[str] = bindparam(
        "failures", FAILURE_STATUSES, expanding=True, literal_execute=True
    )
    # The page's ids first, from the failures' own index alone (an index-only scan that stops
    # at the limit), then their rows. Asked for whole rows at once, the planner prefers the
    # index on `at` and filters the day's other outcomes by status on the table: ten times the
    # reads (52 ms against 5 ms for a day of a million rows).
    ids = select(Outcome.id).where(Outcome.status.in_(failures), *_within(since, until))
    page = _newest_first_page(ids, before=before, limit=limit)
    stmt = select(Outcome).where(Outcome.id.in_(page.scalar_subquery()))
    return _newest_first(session, stmt, before=None, limit=None)


def count_outcomes(
    *,
    session: Session,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> list[dict[str, Any]]:
    """Number of outcomes per (kind, status, code) in the window (index: at)."""
    count = func.count().label("count")
    stmt = (
        select(Outcome.kind, Outcome.status, Outcome.code, count)
        .where(*_within(since, until))
        .group_by(Outcome.kind, Outcome.status, Outcome.code)
        .order_by(Outcome.kind, Outcome.status, Outcome.code.asc().nulls_first())
    )
    return [dict(row) for row in session.execute(stmt).mappings()]


def stream_outcomes(
    *,
    session: Session,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    batch_size: int = 1000,
) -> Iterator[Outcome]:
    """Every outcome in the window, oldest first, fetched in batches (index: at)."""
    # yield_per makes PostgreSQL use a server-side cursor: memory stays at one batch whatever
    # the window holds. Objects are not kept by the session once the caller drops them.
    stmt = select(Outcome).where(*_within(since, until)).order_by(Outcome.at, Outcome.id)
    yield from session.scalars(stmt.execution_options(yield_per=batch_size))


def _newest_first(
    session: Session, stmt: Select[Outcome], *, before: Cursor | None, limit: int | None
) -> list[Outcome]:
    """Newest first, after the (at, id) the previous page ended on, if any."""
    return list(session.scalars(_newest_first_page(stmt, before=before, limit=limit)))


def _newest_first_page(stmt: Select[Any], *, before: Cursor | None, limit: int | None) -> Any:
    if before is not None:
        at, row_id = before
        stmt = stmt.where((Outcome.at < at) | ((Outcome.at == at) & (Outcome.id < row_id)))
    stmt = stmt.order_by(Outcome.at.desc(), Outcome.id.desc())
    if limit is not None:
        stmt = stmt.limit(limit)
    return stmt


def _history(
    session: Session,
    condition: ColumnElement[bool],
    since: dt.datetime | None,
    until: dt.datetime | None,
    limit: int | None,
) -> list[Outcome]:
    stmt = select(Outcome).where(condition, *_within(since, until)).order_by(Outcome.at, Outcome.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return list(session.scalars(stmt))


def _within(since: dt.datetime | None, until: dt.datetime | None) -> list[ColumnElement[bool]]:
    """The window's conditions: since <= at < until, either side open when None."""
    conditions = []
    if since is not None:
        conditions.append(Outcome.at >= since)
    if until is not None:
        conditions.append(Outcome.at < until)
    return conditions
