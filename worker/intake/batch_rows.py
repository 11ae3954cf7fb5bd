"""The domain rows of a whole batch, one statement per kind of row.

``rows.add_rows`` writes one event's rows with three or four statements; a batch of 200 events
made 700 round trips, half the intake's time (bench/README.md, "Where the intake's time goes").
Here every redeem request, bill, link and redemption of the batch goes in with one multi-row
insert per kind, in arrival order (so where two events claim the same row, the first still
wins), and then the links are made with three set-wise updates.

The end state is the one-at-a-time end state, because linking does not depend on which side
came first: a listed redemption belongs to the bill that lists it (a bill's explicit update
overrides, whenever it comes), and any other redemption with no bill yet takes its order's
bill unless that bill lists its redemptions. ``tests/intake/test_batch_rows.py`` checks this
against ``add_rows`` on random batches. The caller holds every matching lock of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import exists, or_, select, tuple_, update
from sqlalchemy.orm import Session

from models.redemptions import COUPON, POINTS, PointsRedeemRequest, Redemption
from models.transactions import Transaction, TransactionLink
from models.upsert import insert
from worker.intake.contract import (
    CouponRedeemed,
    Event,
    PointsRedeemed,
    PointsRedeemRequested,
    TransactionCompleted,
)
from worker.intake.rows import external_reference_for

Work = tuple[set[str], set[int]]
RedemptionEvent = CouponRedeemed | PointsRedeemed


def add_batch_rows(session: Session, events: Sequence[Event]) -> list[Work]:
    """Write what each newly accepted event becomes; return, per event and in order, the
    orders and redeem requests it made ready to work on."""
    work: list[Work] = [(set(), set()) for _ in events]
    requests = [(i, e) for i, e in enumerate(events) if isinstance(e, PointsRedeemRequested)]
    bills = [(i, e) for i, e in enumerate(events) if isinstance(e, TransactionCompleted)]
    redemptions = [(i, e) for i, e in enumerate(events) if isinstance(e, RedemptionEvent)]
    for i, request_id in _add_redeem_requests(session, requests):
        work[i][1].add(request_id)
    new_bills = _add_bills(session, bills)
    for i, event in bills:
        if event.event_id in new_bills:
            work[i][0].add(event.order_ref)
    _add_redemptions(session, [event for _, event in redemptions])
    _link(session, new_bills, [event for _, event in redemptions])
    for (i, _), order_ref in zip(redemptions, _bills_of(session, redemptions), strict=True):
        if order_ref is not None:
            work[i][0].add(order_ref)
    return work


def _add_redeem_requests(
    session: Session, requests: list[tuple[int, PointsRedeemRequested]]
) -> list[tuple[int, int]]:
    if not requests:
        return []
    rows = [
        {
            "event_id": event.event_id,
            "external_reference_number": external_reference_for(event.event_id),
            "order_ref": event.order_ref,
            "customer_type": event.customer.identifier_type,
            "customer_value": event.customer.identifier_value,
            "points_text": str(event.points),
            "program_id": event.program_id,
            "validation_code": event.validation_code,
            "notes": event.notes,
            "custom_fields": event.custom_fields,
            "skip_validation": event.skip_validation,
        }
        for _, event in requests
    ]
    session.execute(
        insert(session, PointsRedeemRequest).on_conflict_do_nothing(index_elements=["event_id"]),
        rows,
    )
    ids = dict(
        session.execute(
            select(PointsRedeemRequest.event_id, PointsRedeemRequest.id).where(
                PointsRedeemRequest.event_id.in_([row["event_id"] for row in rows])
            )
        ).all()
    )
    return [(i, ids[event.event_id]) for i, event in requests]


def _add_bills(
    session: Session, bills: list[tuple[int, TransactionCompleted]]
) -> dict[str, tuple[int, TransactionCompleted]]:
    """Insert the bills (the first of an order wins) and their links; return the new bills by
    event id, each with its row id."""
    if not bills:
        return {}
    rows = [
        {
            "event_id": event.event_id,
            "order_ref": event.order_ref,
            "bill_number": event.bill_number,
            "bill_id": event.bill_id,
            "bill_amount": event.bill_amount,
            "purpose": event.purpose,
            "custom_fields": event.custom_fields,
            "explicit": event.redemptions is not None,
            "customer_type": event.customer.identifier_type,
            "customer_value": event.customer.identifier_value,
            "occurred_at": event.occurred_at,
        }
        for _, event in bills
    ]
    session.execute(
        insert(session, Transaction).on_conflict_do_nothing(index_elements=["order_ref"]), rows
    )
    # A bill is new when its order's row carries its event id: the inbox accepted each event
    # once, so no earlier bill can carry it.
    found = session.execute(
        select(Transaction.event_id, Transaction.id).where(
            Transaction.order_ref.in_([row["order_ref"] for row in rows])
        )
    )
    ids = dict(found.all())
    new = {e.event_id: (ids[e.event_id], e) for _, e in bills if e.event_id in ids}
    links = [
        {"transaction_id": transaction_id, "kind": kind, "redemption_id": redemption_id}
        for transaction_id, event in new.values()
        if event.redemptions is not None
        for kind, redemption_id in sorted({ref.key for ref in event.redemptions})
    ]
    if links:
        session.execute(
            insert(session, TransactionLink).on_conflict_do_nothing(
                index_elements=["kind", "redemption_id"]
            ),
            links,
        )
    return new


def _add_redemptions(session: Session, events: list[RedemptionEvent]) -> None:
    """One insert per conflict target: coupons and points by their platform id, points without
    one by their external reference."""
    coupons: list[dict[str, Any]] = []
    points_by_id: list[dict[str, Any]] = []
    points_by_reference: list[dict[str, Any]] = []
    for event in events:
        values: dict[str, Any] = {
            "order_ref": event.order_ref,
            "customer_type": event.customer.identifier_type,
            "customer_value": event.customer.identifier_value,
            "event_id": event.event_id,
        }
        if isinstance(event, CouponRedeemed):
            coupons.append(
                values
                | {
                    "kind": COUPON,
                    "redemption_id": str(event.redemption_id),
                    "coupon_code": event.coupon_code,
                }
            )
            continue
        values |= {
            "kind": POINTS,
            "redemption_id": event.redemption_id,
            "external_reference_number": event.external_reference_number,
            "points": event.points,
            "program_id": event.program_id,
        }
        (points_by_id if event.redemption_id else points_by_reference).append(values)
    for rows, conflict in (
        (coupons, ["kind", "redemption_id"]),
        (points_by_id, ["kind", "redemption_id"]),
        (points_by_reference, ["kind", "external_reference_number"]),
    ):
        if rows:
            statement = insert(session, Redemption).on_conflict_do_nothing(index_elements=conflict)
            session.execute(statement, rows)


def _identity(event: RedemptionEvent) -> tuple[str, str, bool]:
    """The redemption row an event names: by platform id, else by external reference."""
    if isinstance(event, CouponRedeemed):
        return COUPON, str(event.redemption_id), True
    if event.redemption_id:
        return POINTS, event.redemption_id, True
    return POINTS, event.external_reference_number or "", False


def _link(
    session: Session,
    new_bills: dict[str, tuple[int, TransactionCompleted]],
    redemptions: list[RedemptionEvent],
) -> None:
    """Three set-wise updates, which end where the events one at a time would have."""
    listing = [t for t, e in new_bills.values() if e.redemptions is not None]
    by_id = [(kind, key) for kind, key, has_id in map(_identity, redemptions) if has_id]
    link = TransactionLink
    listed_for_it = (
        select(link.transaction_id)
        .where(link.kind == Redemption.kind, link.redemption_id == Redemption.redemption_id)
        .scalar_subquery()
    )
    if listing:
        # A new bill that lists its redemptions takes them, from wherever they were.
        session.execute(
            update(Redemption)
            .where(
                exists().where(
                    link.kind == Redemption.kind,
                    link.redemption_id == Redemption.redemption_id,
                    link.transaction_id.in_(listing),
                )
            )
            .values(transaction_id=listed_for_it)
            .execution_options(synchronize_session=False)
        )
    if by_id:
        # A new redemption some bill lists goes to that bill.
        session.execute(
            update(Redemption)
            .where(
                tuple_(Redemption.kind, Redemption.redemption_id).in_(by_id),
                Redemption.transaction_id.is_(None),
                exists().where(
                    link.kind == Redemption.kind, link.redemption_id == Redemption.redemption_id
                ),
            )
            .values(transaction_id=listed_for_it)
            .execution_options(synchronize_session=False)
        )
    orders = {e.order_ref for _, e in new_bills.values() if e.redemptions is None}
    orders |= {event.order_ref for event in redemptions}
    if orders:
        # Anything else still without a bill takes its order's bill, unless that bill lists its
        # redemptions or another bill lists this one.
        implicit = (
            select(Transaction.id)
            .where(Transaction.order_ref == Redemption.order_ref, Transaction.explicit.is_(False))
            .scalar_subquery()
        )
        listed_elsewhere = exists().where(
            link.kind == Redemption.kind, link.redemption_id == Redemption.redemption_id
        )
        session.execute(
            update(Redemption)
            .where(
                Redemption.order_ref.in_(sorted(orders)),
                Redemption.transaction_id.is_(None),
                implicit.is_not(None),
                or_(Redemption.redemption_id.is_(None), ~listed_elsewhere),
            )
            .values(transaction_id=implicit)
            .execution_options(synchronize_session=False)
        )


def _bills_of(session: Session, redemptions: list[tuple[int, RedemptionEvent]]) -> list[str | None]:
    """The order of the bill each event's redemption now belongs to (None: no bill yet)."""
    if not redemptions:
        return []
    identities = [_identity(event) for _, event in redemptions]
    by_id = [(kind, key) for kind, key, has_id in identities if has_id]
    by_reference = [(kind, key) for kind, key, has_id in identities if not has_id]
    conditions = []
    if by_id:
        conditions.append(tuple_(Redemption.kind, Redemption.redemption_id).in_(by_id))
    if by_reference:
        conditions.append(
            tuple_(Redemption.kind, Redemption.external_reference_number).in_(by_reference)
        )
    rows = session.execute(
        select(
            Redemption.kind,
            Redemption.redemption_id,
            Redemption.external_reference_number,
            Transaction.order_ref,
        )
        .join(Transaction, Transaction.id == Redemption.transaction_id)
        .where(or_(*conditions))
    )
    found: dict[tuple[str, str, bool], str] = {}
    for kind, redemption_id, reference, order_ref in rows:
        if redemption_id is not None:
            found[(kind, redemption_id, True)] = order_ref
        if reference is not None:
            found[(kind, reference, False)] = order_ref
    return [found.get(identity) for identity in identities]
