"""Intake: one message in, stored once with its domain rows; bad input rejected on record."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from models.events import InboxEvent
from models.redemptions import PointsRedeemRequest, Redemption
from models.transactions import Transaction
from tests.factories import events
from worker.intake.rows import external_reference_for
from worker.intake.store import store_message


def _store(session, event_or_body):
    raw = event_or_body if isinstance(event_or_body, bytes) else events.body(event_or_body)
    stored = store_message(session, raw, routing_key="test")
    session.commit()
    return stored


def _count(session, model):
    return session.scalar(select(func.count()).select_from(model))


def test_redemption_first_then_bill_links_them_and_names_the_order(session):
    assert _store(session, events.coupon_redeemed("o-1", 101)).orders == set()
    stored = _store(session, events.transaction_completed("o-1"))
    assert stored.orders == {"o-1"}
    redemption = session.scalars(select(Redemption)).one()
    assert redemption.transaction_id == session.scalars(select(Transaction.id)).one()


def test_bill_first_then_redemption_links_them_and_names_the_order(session):
    assert _store(session, events.transaction_completed("o-2")).orders == {"o-2"}
    stored = _store(session, events.points_redeemed("o-2", "Pabc"))
    assert stored.orders == {"o-2"}
    assert session.scalars(select(Redemption.transaction_id)).one() is not None


def test_a_redelivered_event_changes_nothing_but_names_its_work_again(session):
    event = events.coupon_redeemed("o-3", 303)
    bill = events.transaction_completed("o-3")
    _store(session, event)
    _store(session, bill)
    before = [_count(session, model) for model in (InboxEvent, Redemption, Transaction)]
    again = _store(session, event)
    assert again.status == "duplicate"
    assert again.orders == {"o-3"}  # in case the first delivery died before enqueueing
    assert [_count(session, model) for model in (InboxEvent, Redemption, Transaction)] == before


def test_an_explicit_list_takes_only_the_listed_redemptions_even_from_another_order(session):
    _store(session, events.coupon_redeemed("o-4", 401))
    _store(session, events.coupon_redeemed("other-order", 402))
    bill = events.transaction_completed(
        "o-4", redemptions=[{"kind": "coupon", "redemption_id": 402}]
    )
    assert _store(session, bill).orders == {"o-4"}
    rows = session.execute(select(Redemption.redemption_id, Redemption.transaction_id)).all()
    linked = {redemption_id: transaction_id for redemption_id, transaction_id in rows}
    assert linked["401"] is None
    assert linked["402"] is not None
    # A listed redemption arriving after its bill finds it through the list, too.
    late = _store(session, events.points_redeemed("elsewhere", "P-late"))
    assert late.orders == set()
    bill2 = events.transaction_completed(
        "o-5", redemptions=[{"kind": "points", "redemption_id": "P-later"}]
    )
    _store(session, bill2)
    assert _store(session, events.points_redeemed("unrelated", "P-later")).orders == {"o-5"}


def test_a_redeem_request_gets_a_stable_external_reference(session):
    event = events.redeem_requested("o-6")
    stored = _store(session, event)
    request = session.scalars(select(PointsRedeemRequest)).one()
    assert stored.redeem_requests == {request.id}
    assert request.external_reference_number == external_reference_for(event["event_id"])
    assert _store(session, event).redeem_requests == {request.id}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "body is not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "not an object"),
        (json.dumps({"event_id": "x1"}).encode(), "field 'type': required"),
        (json.dumps({"event_id": "x2", "type": "order.cancelled"}).encode(), "unknown event type"),
    ],
)
def test_a_message_that_is_not_an_event_is_stored_as_rejected_with_its_reason(
    session, body, reason
):
    stored = _store(session, body)
    assert stored.status == "rejected"
    row = session.scalars(select(InboxEvent)).one()
    assert row.status == "rejected"
    assert reason in row.reason
    assert _store(session, body).status == "duplicate"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"redemption_id": "12"}, "redemption_id"),
        ({"redemption_id": -3}, "redemption_id"),
        ({"occurred_at": "2026-11-21T10:00:00"}, "occurred_at"),
        (
            {"customer": {"identifier_type": "fax", "identifier_value": "1"}},
            "customer.identifier_type",
        ),
        ({"order_ref": ""}, "order_ref"),
        ({"event_id": "x" * 129}, "event_id"),
        ({"customer": None}, "customer"),
    ],
)
def test_each_contract_violation_of_a_coupon_event_names_the_field(session, change, field):
    event = events.coupon_redeemed("o-7", 700) | change
    stored = _store(session, event)
    assert stored.status == "rejected"
    assert f"field '{field}'" in stored.reason
    assert _count(session, Redemption) == 0


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (events.points_redeemed("o-8", "P1", points="1.2345"), "points"),
        (events.transaction_completed("o-8", bill_id=10**19), "bill_id"),
        (events.transaction_completed("o-8", bill_id=0), "bill_id"),
        (events.transaction_completed("o-8", bill_amount="-1"), "bill_amount"),
        (events.transaction_completed("o-8", purpose="p" * 256), "purpose"),
        (events.transaction_completed("o-8", custom_fields={"a": 1}), "custom_fields.a"),
        (
            events.redeem_requested("o-8")
            | {"customer": {"identifier_type": "email", "identifier_value": "a@b"}},
            "customer",
        ),
    ],
)
def test_each_contract_violation_of_other_events_names_the_field(session, event, field):
    stored = _store(session, event)
    assert stored.status == "rejected"
    assert f"field '{field}" in stored.reason


def test_unknown_fields_are_kept_not_rejected(session):
    event = events.coupon_redeemed("o-9", 909, till_id="T-7")
    assert _store(session, event).status == "accepted"
    assert session.scalars(select(InboxEvent.payload)).one()["till_id"] == "T-7"


def test_points_keep_their_exact_decimal_value(session):
    _store(
        session,
        json.dumps(events.points_redeemed("o-10", "P10", points="0.1"))
        .replace('"0.1"', "0.1")
        .encode(),
    )
    assert str(session.scalars(select(Redemption.points)).one()) == "0.100"


def test_a_redemption_and_its_bill_stored_at_the_same_moment_are_always_linked(clean_db):
    """Two intake consumers (two workers) racing on one order must not both miss each other."""
    import threading

    from models.session import unit_of_work

    orders = 60
    barrier = threading.Barrier(2)
    failures: list[BaseException] = []

    def consumer(make_event) -> None:
        try:
            for number in range(orders):
                barrier.wait(timeout=30)
                with unit_of_work(clean_db) as session:
                    store_message(session, events.body(make_event(number)))
                    session.commit()
        except BaseException as exc:  # surfaced below, in the test's own thread
            failures.append(exc)
            barrier.abort()

    threads = [
        threading.Thread(
            target=consumer, args=(lambda n: events.coupon_redeemed(f"race-{n}", n + 1),)
        ),
        threading.Thread(
            target=consumer, args=(lambda n: events.transaction_completed(f"race-{n}"),)
        ),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures
    with unit_of_work(clean_db) as session:
        unlinked = session.scalars(
            select(Redemption.order_ref).where(Redemption.transaction_id.is_(None))
        ).all()
    assert unlinked == []
