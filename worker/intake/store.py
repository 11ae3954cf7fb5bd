"""Intake's plain functions: messages in, stored with their domain rows in one transaction.

The inbox rows are written here (accepted, duplicate or rejected), the domain rows an accepted
event becomes in ``rows.py``. ``store_batch`` takes many messages (their inbox rows in one
statement), ``store_message`` one. The caller commits, then enqueues the work each ``Stored``
names, then acknowledges.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.events import ACCEPTED, REJECTED, InboxEvent
from models.matching import lock_match_keys
from models.redemptions import PointsRedeemRequest, Redemption
from models.transactions import Transaction
from models.upsert import insert
from worker.intake.batch_rows import add_batch_rows
from worker.intake.contract import (
    Event,
    PointsRedeemRequested,
    TransactionCompleted,
    parse_event,
)
from worker.intake.rows import add_rows, match_keys
from worker.intake.wire import MAX_BODY_BYTES, ContractError
from worker.observe.masking import storable_text

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
    orders, redeem_requests = add_rows(session, event)
    return Stored(
        status=ACCEPTED, event_id=event.event_id, orders=orders, redeem_requests=redeem_requests
    )


@dataclass(frozen=True)
class Incoming:
    """One message as the intake received it: its bytes and the routing key it came with."""

    body: bytes
    routing_key: str | None = None


def store_batch(session: Session, messages: Sequence[Incoming]) -> list[Stored]:
    """Validate and store many messages in one transaction; one ``Stored`` per message, in order.

    The same fates as ``store_message`` one by one: the inbox rows go in with one statement per
    kind (accepted, rejected), then the domain rows of every newly accepted event with one
    statement per kind of row (``batch_rows.py``), ending where the events one at a time would.
    A second copy of an event in the same batch is a duplicate of the first.
    """
    parsed = [_inbox_values(message) for message in messages]
    events = [event for _, event in parsed if event is not None]
    # Every matching lock of the batch at once, sorted, before any row is written: two batches
    # on two workers then never wait on each other in a circle.
    lock_match_keys(session, [key for event in events for key in match_keys(event)])
    inserted = _insert_inbox_rows(session, [values for values, event in parsed if event])
    inserted |= _insert_inbox_rows(session, [values for values, event in parsed if not event])
    firsts: list[bool] = []
    for values, _ in parsed:
        firsts.append(values["dedup_key"] in inserted)
        inserted.discard(values["dedup_key"])  # a second copy in this batch is a duplicate
    accepted = [event for (_, event), first in zip(parsed, firsts, strict=True) if event and first]
    work = iter(add_batch_rows(session, accepted))
    results: list[Stored] = []
    for (values, event), first in zip(parsed, firsts, strict=True):
        if event is None:
            status = REJECTED if first else "duplicate"
            results.append(Stored(status, values["event_id"], reason=values["full_reason"]))
        elif first:
            orders, redeem_requests = next(work)
            results.append(Stored(ACCEPTED, event.event_id, None, orders, redeem_requests))
        else:
            results.append(_work_for_duplicate(session, event))
    return results


def _inbox_values(message: Incoming) -> tuple[dict[str, Any], Event | None]:
    """The inbox row of one message, and its event when the contract accepts it."""
    body, routing_key = message.body, _storable(message.routing_key, 128)
    try:
        event = parse_event(body)
    except ContractError as exc:
        return _rejected_values(body, exc.reason, routing_key, exc.event_id, exc.type), None
    values = {
        "dedup_key": event.event_id,
        "event_id": event.event_id,
        "type": event.type,
        "status": ACCEPTED,
        "order_ref": event.order_ref,
        "routing_key": routing_key,
        "payload": event.model_dump(mode="json"),
        "occurred_at": event.occurred_at,
        **_size_and_hash(body),
    }
    return values, event


def _rejected_values(
    body: bytes, reason: str, routing_key: str | None, event_id: str | None, type_: str | None
) -> dict[str, Any]:
    # A rejected message is keyed by its body: see store_rejected.
    return {
        "dedup_key": f"rejected:{hashlib.sha256(body).hexdigest()}",
        "event_id": event_id,
        "type": type_,
        "status": REJECTED,
        "reason": reason[:MAX_REASON],
        "routing_key": routing_key,
        "raw_body": storable_text(body, MAX_EXCERPT),
        "raw_bytes": body[:MAX_KEPT_BYTES],
        "full_reason": reason,
        **_size_and_hash(body),
    }


def _insert_inbox_rows(session: Session, rows: list[dict[str, Any]]) -> set[str]:
    """Insert the rows that are new (one statement: SQLAlchemy sends an executemany of an
    INSERT ... RETURNING as multi-row VALUES pages); return the dedup keys that were."""
    if not rows:
        return set()
    statement = (
        insert(session, InboxEvent)
        .on_conflict_do_nothing(index_elements=["dedup_key"])
        .returning(InboxEvent.dedup_key)
    )
    # Sorted by key, so two batches that share events lock their index entries in one order.
    ordered = sorted(
        ({k: v for k, v in row.items() if k != "full_reason"} for row in rows),
        key=lambda row: row["dedup_key"],
    )
    return set(session.scalars(statement, ordered))


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
