"""A batch's domain rows, written a statement per kind, end where the events one at a time do.

Random batches over a few orders and redemption ids (bills that list their redemptions or not,
redemptions before and after their bill, one redemption claimed by two events, two bills for one
order, points without an id, redeem requests) are stored twice in real PostgreSQL: one message
at a time with ``store_message`` and all at once with ``store_batch``. The bills, links,
redemptions (and which bill each belongs to) and redeem requests must be the same, and every
order whose bill has redemptions must be named for work by the batch.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from models.redemptions import PointsRedeemRequest, Redemption
from models.session import build_engine
from models.transactions import Transaction, TransactionLink
from tests.conftest import TABLES
from tests.factories import events
from worker.intake.store import Incoming, store_batch, store_message
from worker.ops.migrate import upgrade

ORDERS = ["o-1", "o-2", "o-3"]
COUPONS = [1, 2, 3, 4]
POINTS = ["P1", "P2"]

orders = st.sampled_from(ORDERS)
listed = st.lists(
    st.one_of(
        st.sampled_from(COUPONS).map(lambda c: {"kind": "coupon", "redemption_id": c}),
        st.sampled_from(POINTS).map(lambda p: {"kind": "points", "redemption_id": p}),
    ),
    max_size=3,
)
event = st.one_of(
    st.builds(events.coupon_redeemed, orders, st.sampled_from(COUPONS)),
    st.builds(events.points_redeemed, orders, st.sampled_from(POINTS)),
    st.builds(
        lambda order, ref: events.points_redeemed(order, None, external_reference_number=ref),
        orders,
        st.sampled_from(["R1", "R2"]),
    ),
    st.builds(events.transaction_completed, orders),
    st.builds(
        lambda order, refs: events.transaction_completed(order, redemptions=refs), orders, listed
    ),
    st.builds(events.redeem_requested, orders),
)


def end_state(session: Session) -> dict[str, Any]:
    bill = {t.id: (t.order_ref, t.event_id) for t in session.scalars(select(Transaction))}
    return {
        "bills": sorted(bill.values()),
        "links": sorted(
            (link.kind, link.redemption_id, bill[link.transaction_id])
            for link in session.scalars(select(TransactionLink))
        ),
        "redemptions": sorted(
            (
                r.kind,
                r.redemption_id or "",
                r.external_reference_number or "",
                r.order_ref,
                r.event_id,
                bill[r.transaction_id] if r.transaction_id else ("", ""),
            )
            for r in session.scalars(select(Redemption))
        ),
        "requests": sorted(r.event_id for r in session.scalars(select(PointsRedeemRequest))),
    }


def empty(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))


def one_at_a_time(engine: Engine, bodies: list[bytes]) -> dict[str, Any]:
    empty(engine)
    with Session(engine) as session:
        for body in bodies:
            store_message(session, body)
            session.commit()
        return end_state(session)


def as_one_batch(engine: Engine, bodies: list[bytes]) -> tuple[dict[str, Any], set[str]]:
    empty(engine)
    with Session(engine) as session:
        stored = store_batch(session, [Incoming(body) for body in bodies])
        session.commit()
        named = {order for result in stored for order in result.orders}
        return end_state(session), named


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(event, min_size=1, max_size=14))
def test_a_batch_ends_where_its_events_one_at_a_time_end(pg_engine, batch):
    bodies = [events.body(e) for e in batch]
    expected = one_at_a_time(pg_engine, bodies)
    got, named = as_one_batch(pg_engine, bodies)
    assert got == expected
    billed = {bill[0] for *_, bill in got["redemptions"] if bill[0]}
    assert billed <= named, "an order whose bill has redemptions was not named for work"


def test_the_batch_statements_run_on_the_embedded_sqlite_too(tmp_path):
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    upgrade(url)
    engine = build_engine(url)
    batch = [
        events.coupon_redeemed("o-1", 1),
        events.points_redeemed("o-1", None, external_reference_number="R1"),
        events.transaction_completed("o-1"),
        events.transaction_completed("o-2", redemptions=[{"kind": "coupon", "redemption_id": 2}]),
        events.coupon_redeemed("o-9", 2),
        events.redeem_requested("o-1"),
    ]
    bodies = [json.dumps(e).encode() for e in batch]
    with Session(engine) as session:
        stored = store_batch(session, [Incoming(body) for body in bodies])
        session.commit()
        state = end_state(session)
    assert [s.status for s in stored] == ["accepted"] * 6
    assert {o for s in stored for o in s.orders} == {"o-1", "o-2"}
    bills = {(kind, rid or ref): bill[0] for kind, rid, ref, _, _, bill in state["redemptions"]}
    assert bills == {("coupon", "1"): "o-1", ("points", "R1"): "o-1", ("coupon", "2"): "o-2"}
    assert len(stored[5].redeem_requests) == 1
