"""Intake's plain functions: one message in, stored with its domain rows in one transaction.

The caller commits, then enqueues what ``Stored.work`` names, then acknowledges.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import exists, or_, select, update
from sqlalchemy.orm import Session

from models.events import ACCEPTED, REJECTED, InboxEvent
from models.redemptions import COUPON, POINTS, PointsRedeemRequest, Redemption
from models.transactions import Transaction, TransactionLink
from models.upsert import insert
from worker.intake.contract import (
    MAX_BODY_BYTES,
    ContractError,
    CouponRedeemed,
    Event,
    PointsRedeemed,
    PointsRedeemRequested,
    TransactionCompleted,
    parse_event,
)
from worker.masking import storable_text
from worker.reconcile.locks import lock_match_keys

#: A rejected message keeps up to this many of its bytes (all of any body within the intake's
#: limit) and a text excerpt of the first ones; size and SHA-256 are always of the whole body.
MAX_KEPT_BYTES = MAX_BODY_BYTES
MAX_EXCERPT = 4_096
MAX_REASON = 2_000


@dataclass
class Stored:
    """What one message became, and the work to enqueue once it is committed."""

    status: str  # accepted | rejected | duplicate
    event_id: str | None
    reason: str | None = None
    orders: set[str] = field(default_factory=set)
    redeem_requests: set[int] = field(default_factory=set)


def external_reference_for(event_id: str) -> str:
    """The platform de-duplicates redeems on this; the same event always yields the same one."""
    return "recon-" + hashlib.sha256(event_id.encode()).hexdigest()[:40]


def store_message(session: Session, body: bytes, *, routing_key: str | None = None) -> Stored:
    """Validate and store one message; a duplicate changes nothing."""
    try:
        event = parse_event(body)
    except ContractError as exc:
        return store_rejected(
            session,
            body,
            reason=exc.reason,
            routing_key=routing_key,
            event_id=exc.event_id,
            type_=exc.type,
        )
    inserted = _insert_inbox(
        session,
        dedup_key=event.event_id,
        event_id=event.event_id,
        type=event.type,
        status=ACCEPTED,
        order_ref=event.order_ref,
        routing_key=_storable(routing_key, 128),
        payload=event.model_dump(mode="json"),
        occurred_at=event.occurred_at,
        **_size_and_hash(body),
    )
    if not inserted:
        # Already stored: perhaps the process died after commit but before enqueue, so the
        # work is named again. Enqueueing it twice is harmless: tasks are idempotent.
        return _work_for_duplicate(session, event)
    stored = Stored(status=ACCEPTED, event_id=event.event_id)
    _apply(session, event, stored)
    return stored


def _insert_inbox(session: Session, **values: Any) -> bool:
    statement = (
        insert(session, InboxEvent)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["dedup_key"])
        .returning(InboxEvent.id)
    )
    return session.execute(statement).first() is not None


def store_rejected(
    session: Session,
    body: bytes,
    *,
    reason: str,
    routing_key: str | None,
    event_id: str | None = None,
    type_: str | None = None,
) -> Stored:
    """Keep a message that is not a storable event: its bytes, size, hash and a readable excerpt.

    A rejected message is keyed by its body: a redelivery of the same bytes is a duplicate, while
    a corrected event reusing the same event_id can still be accepted later.
    """
    inserted = _insert_inbox(
        session,
        dedup_key=f"rejected:{hashlib.sha256(body).hexdigest()}",
        event_id=event_id,
        type=type_,
        status=REJECTED,
        reason=reason[:MAX_REASON],
        routing_key=_storable(routing_key, 128),
        raw_body=storable_text(body, MAX_EXCERPT),
        raw_bytes=body[:MAX_KEPT_BYTES],
        **_size_and_hash(body),
    )
    return Stored(status=REJECTED if inserted else "duplicate", event_id=event_id, reason=reason)


def _size_and_hash(body: bytes) -> dict[str, Any]:
    return {"body_size": len(body), "body_sha256": hashlib.sha256(body).hexdigest()}


def _storable(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    return storable_text(value.encode("utf-8", "backslashreplace"), limit)[:limit]


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


def _apply(session: Session, event: Event, stored: Stored) -> None:
    lock_match_keys(session, match_keys(event))
    if isinstance(event, CouponRedeemed | PointsRedeemed):
        transaction = _add_redemption(session, event)
        if transaction is not None:
            stored.orders.add(transaction.order_ref)
    elif isinstance(event, PointsRedeemRequested):
        stored.redeem_requests.add(_add_redeem_request(session, event))
    elif isinstance(event, TransactionCompleted):
        order_ref = _add_transaction(session, event)
        if order_ref is not None:
            stored.orders.add(order_ref)


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
        order_ref=event.order_ref,
    )


def attach_redemption(
    session: Session,
    *,
    kind: str,
    redemption_id: str | None,
    external_reference_number: str | None,
    order_ref: str,
) -> Transaction | None:
    """Find the bill a redemption belongs to (listed explicitly, else same order) and link it."""
    transaction = None
    if redemption_id is not None:
        transaction = session.scalars(
            select(Transaction)
            .join(TransactionLink)
            .where(TransactionLink.kind == kind, TransactionLink.redemption_id == redemption_id)
        ).first()
    if transaction is None:
        transaction = session.scalars(
            select(Transaction).where(
                Transaction.order_ref == order_ref, Transaction.explicit.is_(False)
            )
        ).first()
    if transaction is None:
        return None
    identity = (
        Redemption.redemption_id == redemption_id
        if redemption_id is not None
        else Redemption.external_reference_number == external_reference_number
    )
    session.execute(
        update(Redemption)
        .where(Redemption.kind == kind, identity, Redemption.transaction_id.is_(None))
        .values(transaction_id=transaction.id)
    )
    return transaction


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


def _work_for_duplicate(session: Session, event: Event) -> Stored:
    stored = Stored(status="duplicate", event_id=event.event_id)
    if isinstance(event, PointsRedeemRequested):
        request_id = session.scalars(
            select(PointsRedeemRequest.id).where(PointsRedeemRequest.event_id == event.event_id)
        ).first()
        if request_id is not None:
            stored.redeem_requests.add(request_id)
        return stored
    if isinstance(event, TransactionCompleted):
        query = select(Transaction.order_ref).where(Transaction.order_ref == event.order_ref)
    else:
        query = (
            select(Transaction.order_ref)
            .join(Redemption, Redemption.transaction_id == Transaction.id)
            .where(Redemption.event_id == event.event_id)
        )
    order_ref = session.scalars(query).first()
    if order_ref is not None:
        stored.orders.add(order_ref)
    return stored
