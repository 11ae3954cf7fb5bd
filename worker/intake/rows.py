"""The domain rows an accepted event becomes: a redemption, a redeem request, or a bill with its
links; each matched to its other side (``models/matching.py``) in the same transaction."""

from __future__ import annotations

import hashlib
from typing import Any

from sqlalchemy import exists, or_, select, update
from sqlalchemy.orm import Session

from models.matching import attach_redemption, lock_match_keys
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


def external_reference_for(event_id: str) -> str:
    """The platform de-duplicates redeems on this; the same event always yields the same one."""
    return "recon-" + hashlib.sha256(event_id.encode()).hexdigest()[:40]


def match_keys(event: Event) -> list[str]:
    """What this event can be matched by: its order, and the redemptions it names."""
    keys = [f"order:{event.order_ref}"]
    if isinstance(event, CouponRedeemed):
        keys.append(f"coupon:{event.redemption_id}")
    elif isinstance(event, PointsRedeemed) and event.redemption_id:
        keys.append(f"points:{event.redemption_id}")
    elif isinstance(event, TransactionCompleted) and event.redemptions:
        keys.extend(f"{ref.kind}:{ref.redemption_id}" for ref in event.redemptions)
    return keys


def add_rows(session: Session, event: Event, *, locked: bool = False) -> tuple[set[str], set[int]]:
    """Write what an accepted event becomes; return the orders and the redeem requests it made
    ready to work on. ``locked``: the caller already holds the event's matching locks."""
    orders: set[str] = set()
    redeem_requests: set[int] = set()
    if not locked:
        lock_match_keys(session, match_keys(event))
    if isinstance(event, CouponRedeemed | PointsRedeemed):
        transaction = _add_redemption(session, event)
        if transaction is not None:
            orders.add(transaction.order_ref)
    elif isinstance(event, PointsRedeemRequested):
        redeem_requests.add(_add_redeem_request(session, event))
    elif isinstance(event, TransactionCompleted):
        order_ref = _add_transaction(session, event)
        if order_ref is not None:
            orders.add(order_ref)
    return orders, redeem_requests


def _add_redemption(session: Session, event: CouponRedeemed | PointsRedeemed) -> Transaction | None:
    kind = COUPON if isinstance(event, CouponRedeemed) else POINTS
    values: dict[str, Any] = {
        "kind": kind,
        "order_ref": event.order_ref,
        "customer_type": event.customer.identifier_type,
        "customer_value": event.customer.identifier_value,
        "event_id": event.event_id,
    }
    if isinstance(event, CouponRedeemed):
        values |= {"redemption_id": str(event.redemption_id), "coupon_code": event.coupon_code}
        conflict = ["kind", "redemption_id"]
    else:
        values |= {
            "redemption_id": event.redemption_id,
            "external_reference_number": event.external_reference_number,
            "points": event.points,
            "program_id": event.program_id,
        }
        conflict = ["kind", "redemption_id" if event.redemption_id else "external_reference_number"]
    statement = (
        insert(session, Redemption).values(**values).on_conflict_do_nothing(index_elements=conflict)
    )
    session.execute(statement)
    return attach_redemption(
        session,
        kind=kind,
        redemption_id=values["redemption_id"],
        external_reference_number=values.get("external_reference_number"),
    )


def _add_redeem_request(session: Session, event: PointsRedeemRequested) -> int:
    statement = (
        insert(session, PointsRedeemRequest)
        .values(
            event_id=event.event_id,
            external_reference_number=external_reference_for(event.event_id),
            order_ref=event.order_ref,
            customer_type=event.customer.identifier_type,
            customer_value=event.customer.identifier_value,
            points_text=str(event.points),
            program_id=event.program_id,
            validation_code=event.validation_code,
            notes=event.notes,
            custom_fields=event.custom_fields,
            skip_validation=event.skip_validation,
        )
        .on_conflict_do_nothing(index_elements=["event_id"])
    )
    session.execute(statement)
    return session.scalars(
        select(PointsRedeemRequest.id).where(PointsRedeemRequest.event_id == event.event_id)
    ).one()


def _add_transaction(session: Session, event: TransactionCompleted) -> str | None:
    statement = (
        insert(session, Transaction)
        .values(
            event_id=event.event_id,
            order_ref=event.order_ref,
            bill_number=event.bill_number,
            bill_id=event.bill_id,
            bill_amount=event.bill_amount,
            purpose=event.purpose,
            custom_fields=event.custom_fields,
            explicit=event.redemptions is not None,
            customer_type=event.customer.identifier_type,
            customer_value=event.customer.identifier_value,
            occurred_at=event.occurred_at,
        )
        .on_conflict_do_nothing(index_elements=["order_ref"])
        .returning(Transaction.id)
    )
    transaction_id = session.execute(statement).scalar()
    if transaction_id is None:
        # The order already has its bill; the first one wins (README, "Matching").
        return None
    if event.redemptions is not None:
        keys = {ref.key for ref in event.redemptions}
        for kind, redemption_id in sorted(keys):
            session.execute(
                insert(session, TransactionLink)
                .values(transaction_id=transaction_id, kind=kind, redemption_id=redemption_id)
                .on_conflict_do_nothing(index_elements=["kind", "redemption_id"])
            )
        listed = session.scalars(
            select(TransactionLink).where(TransactionLink.transaction_id == transaction_id)
        ).all()
        for link in listed:
            session.execute(
                update(Redemption)
                .where(Redemption.kind == link.kind, Redemption.redemption_id == link.redemption_id)
                .values(transaction_id=transaction_id)
            )
    else:
        listed_elsewhere = exists().where(
            TransactionLink.kind == Redemption.kind,
            TransactionLink.redemption_id == Redemption.redemption_id,
        )
        session.execute(
            update(Redemption)
            .where(
                Redemption.order_ref == event.order_ref,
                Redemption.transaction_id.is_(None),
                or_(Redemption.redemption_id.is_(None), ~listed_elsewhere),
            )
            .values(transaction_id=transaction_id)
        )
    return event.order_ref
