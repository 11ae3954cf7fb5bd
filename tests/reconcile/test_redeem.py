"""Redeeming points: once, whatever is lost on the way; unknown when it cannot be settled."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from models.outcomes import Outcome
from models.redemptions import PointsRedeemRequest, Redemption
from models.session import unit_of_work
from tests.factories import events
from worker.intake.store import store_message
from worker.reconcile.orders import reconcile_order
from worker.reconcile.outcomes import Policy
from worker.reconcile.redeem import redeem_points

REDEEM_PATH = "/v1.1/points/redeem"
POLICY = Policy(max_attempts=3, retry_base_seconds=1)
MOBILE = "919712345678"


def request_for(engine, event) -> int:
    with unit_of_work(engine) as session:
        stored = store_message(session, events.body(event))
        session.commit()
    [request_id] = stored.redeem_requests
    return request_id


def trail(engine):
    with unit_of_work(engine) as session:
        return [
            (o.attempt, o.code, o.status)
            for o in session.scalars(select(Outcome).order_by(Outcome.id))
        ]


def test_a_redeem_succeeds_with_800_and_its_redemption_reconciles_with_the_bill(
    clean_db, client, sandbox
):
    request_id = request_for(clean_db, events.redeem_requested("o-1", MOBILE, points="25.5"))
    report = redeem_points(clean_db, client, request_id=request_id, policy=POLICY)
    assert report.status == "succeeded"
    with unit_of_work(clean_db) as session:
        redemption = session.scalars(select(Redemption)).one()
        assert (redemption.kind, redemption.order_ref, str(redemption.points)) == (
            "points",
            "o-1",
            "25.500",
        )
    assert sandbox.stats()["points_taken"] == {MOBILE: "25.5"}
    with unit_of_work(clean_db) as session:
        store_message(session, events.body(events.transaction_completed("o-1", MOBILE)))
        session.commit()
    reconcile_order(clean_db, client, order_ref="o-1", policy=POLICY)
    assert trail(clean_db) == [(1, 800, "succeeded"), (1, None, "succeeded")]
    assert sandbox.points(redemption.redemption_id)["update_count"] == 1


def test_an_answer_lost_after_the_points_were_taken_does_not_take_them_twice(
    clean_db, client, sandbox
):
    sandbox.script(REDEEM_PATH, {"action": "lost"})
    event = events.redeem_requested("o-2", MOBILE, points="40")
    request_id = request_for(clean_db, event)
    first = redeem_points(clean_db, client, request_id=request_id, policy=POLICY)
    assert first.status == "retrying"
    second = redeem_points(clean_db, client, request_id=request_id, policy=POLICY)
    assert second.status == "succeeded"
    stats = sandbox.stats()
    [reference] = stats["redeem_requests"]  # one distinct external_reference_number
    assert stats["redeem_requests"][reference] == 2  # sent twice ...
    assert stats["redeem_effects"][reference] == 1  # ... taken once
    assert stats["points_taken"] == {MOBILE: "40"}
    assert [status for _, _, status in trail(clean_db)] == ["retrying", "succeeded"]


def test_answers_that_never_settle_it_end_unknown_for_an_operator(clean_db, client, sandbox):
    sandbox.script(REDEEM_PATH, *[{"action": "lost"}] * 3)
    request_id = request_for(clean_db, events.redeem_requested("o-3", MOBILE))
    for _ in range(3):
        report = redeem_points(clean_db, client, request_id=request_id, policy=POLICY)
    assert report.status == "unknown"
    assert trail(clean_db)[-1][2] == "unknown"
    assert sandbox.stats()["points_taken"] == {MOBILE: "25"}
    # unknown is final for the worker: another run sends nothing.
    before = sandbox.stats()["total"]
    assert redeem_points(clean_db, client, request_id=request_id, policy=POLICY).status is None
    assert sandbox.stats()["total"] == before


def test_a_refusal_after_an_ambiguous_attempt_is_unknown_not_failed(clean_db, client, sandbox):
    sandbox.script(REDEEM_PATH, {"action": "drop"}, {"item_code": 1632})
    request_id = request_for(clean_db, events.redeem_requested("o-4", MOBILE))
    redeem_points(clean_db, client, request_id=request_id, policy=POLICY)
    report = redeem_points(clean_db, client, request_id=request_id, policy=POLICY)
    assert report.status == "unknown"


def test_a_retry_later_item_code_retries_without_doubt(clean_db, client, sandbox):
    sandbox.script(REDEEM_PATH, {"item_code": 815})
    request_id = request_for(clean_db, events.redeem_requested("o-5", MOBILE))
    assert (
        redeem_points(clean_db, client, request_id=request_id, policy=POLICY).status == "retrying"
    )
    assert (
        redeem_points(clean_db, client, request_id=request_id, policy=POLICY).status == "succeeded"
    )
    with unit_of_work(clean_db) as session:
        assert session.scalars(select(PointsRedeemRequest.ambiguous)).one() is False


@pytest.mark.parametrize(("points", "code"), [("1.2345", 878), ("0", 801), ("-5", 801)])
def test_points_the_platform_would_refuse_are_failed_locally_and_never_sent(
    clean_db, client, sandbox, points, code
):
    request_id = request_for(clean_db, events.redeem_requested("o-6", MOBILE, points=points))
    assert redeem_points(clean_db, client, request_id=request_id, policy=POLICY).status == "failed"
    assert trail(clean_db) == [(1, code, "failed")]
    assert sandbox.stats()["total"] == 0


def test_a_request_left_in_flight_by_a_dead_worker_is_retried_as_ambiguous(
    clean_db, client, sandbox
):
    request_id = request_for(clean_db, events.redeem_requested("o-7", MOBILE))
    with unit_of_work(clean_db) as session:
        request = session.get(PointsRedeemRequest, request_id)
        request.state, request.attempts = "in_flight", 1
        session.commit()
    report = redeem_points(clean_db, client, request_id=request_id, policy=POLICY)
    assert report.status == "succeeded"
    assert trail(clean_db) == [(2, 800, "succeeded")]
