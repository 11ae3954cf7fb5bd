"""Reconciling an order: per-item outcomes, retries, and nothing sent twice."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import select

from models.outcomes import Outcome
from models.redemptions import Redemption
from models.session import unit_of_work
from tests.factories import events
from worker.intake.store import store_message
from worker.reconcile.orders import SIBLINGS_SETTLE_SECONDS, reconcile_order
from worker.reconcile.outcomes import Policy

COUPON_PATH = "/v2/coupon/redeem"
POINTS_PATH = "/v2/points/updateRedemption"
POLICY = Policy(max_attempts=3, retry_base_seconds=1)


def publish(engine, *items):
    with unit_of_work(engine) as session:
        for event in items:
            store_message(session, events.body(event))
        session.commit()


def outcomes(engine, **where):
    with unit_of_work(engine) as session:
        query = select(Outcome).order_by(Outcome.id)
        for name, value in where.items():
            query = query.where(getattr(Outcome, name) == value)
        return list(session.scalars(query))


def state_of(engine, redemption_id):
    with unit_of_work(engine) as session:
        return session.scalars(
            select(Redemption.state).where(Redemption.redemption_id == redemption_id)
        ).one()


def test_invalid_coupon_id_is_failed_with_510_and_batch_is_762(clean_db, client, sandbox):
    sandbox.register_coupon(11, "919811111111")
    sandbox.register_coupon(12, "919811111111")
    publish(
        clean_db,
        events.coupon_redeemed("o-1", 11, "919811111111"),
        events.coupon_redeemed("o-1", 12, "919811111111"),
        events.coupon_redeemed("o-1", 13, "919811111111"),  # never issued
        events.transaction_completed(
            "o-1", "919811111111", bill_number="B-1", bill_id=77, bill_amount="99.90"
        ),
    )
    report = reconcile_order(clean_db, client, order_ref="o-1", policy=POLICY)
    assert report.calls == 1  # one PUT for the customer's three coupons
    rows = {(o.redemption_id, o.code, o.status) for o in outcomes(clean_db)}
    assert rows == {
        ("11", 761, "succeeded"),
        ("12", 761, "succeeded"),
        ("13", 510, "failed"),
        (None, 762, "succeeded"),
    }
    batch = outcomes(clean_db, code=762)[0]
    assert (batch.bill_number, batch.bill_id, str(batch.bill_amount)) == ("B-1", 77, "99.9000")
    assert batch.request_id  # X-Cap-Requestid kept for the platform's support
    coupon = sandbox.coupon(11)
    assert coupon["metadata"]["transactionNumber"] == "B-1"
    assert coupon["update_count"] == 1
    assert state_of(clean_db, "13") == "failed"


def test_one_coupon_id_beyond_the_java_long_max_fails_alone_and_its_siblings_are_sent(
    clean_db, client, sandbox
):
    """A row the platform could never accept (stored before the contract bounded coupon ids)
    gets its own local 510; the customer's other coupons on the bill still go out."""
    sandbox.register_coupon(41, "919844444444")
    publish(
        clean_db,
        events.coupon_redeemed("o-4", 41, "919844444444"),
        events.transaction_completed("o-4", "919844444444"),
    )
    with unit_of_work(clean_db) as session:
        first = session.scalars(select(Redemption)).one()
        session.add(
            Redemption(
                kind="coupon",
                redemption_id=str(9_223_372_036_854_775_807 + 1),
                order_ref="o-4",
                customer_type="mobile",
                customer_value="919844444444",
                event_id="legacy-1",
                transaction_id=first.transaction_id,
            )
        )
        session.commit()
    report = reconcile_order(clean_db, client, order_ref="o-4", policy=POLICY)
    assert report.calls == 1
    rows = {(o.redemption_id, o.code, o.status, o.http_status) for o in outcomes(clean_db)}
    assert rows == {
        ("41", 761, "succeeded", 200),
        ("9223372036854775808", 510, "failed", None),  # refused here, never sent
    }
    sent = sandbox.requests(COUPON_PATH)
    assert [item["redemptionId"] for item in sent[0]["body"]["redemptions"]] == [41]


def test_coupons_of_two_customers_on_one_bill_take_one_call_each(clean_db, client, sandbox):
    for number, mobile in ((21, "919822222221"), (22, "919822222221"), (23, "919822222222")):
        sandbox.register_coupon(number, mobile)
        publish(clean_db, events.coupon_redeemed("o-2", number, mobile))
    publish(clean_db, events.transaction_completed("o-2", "919822222221"))
    report = reconcile_order(clean_db, client, order_ref="o-2", policy=POLICY)
    assert report.calls == 2
    assert sandbox.stats()["by_endpoint"] == {f"PUT {COUPON_PATH}": 2}


def test_a_coupon_stored_just_after_its_bill_goes_in_the_bills_one_call(clean_db, client, sandbox):
    # An order's events reach several intake consumers at once: the bill may be stored, and
    # its task start, a batch before a sibling coupon. The coupons of a young bill wait for
    # their siblings, so the customer's coupons still go in one call (DESIGN.md).
    mobile = "919855555555"
    for number in (51, 52):
        sandbox.register_coupon(number, mobile)
    publish(
        clean_db,
        events.coupon_redeemed("o-5", 51, mobile),
        events.transaction_completed("o-5", mobile),
    )
    late = threading.Timer(0.1, publish, (clean_db, events.coupon_redeemed("o-5", 52, mobile)))
    late.start()
    report = reconcile_order(clean_db, client, order_ref="o-5", policy=POLICY)
    late.join()

    assert report.calls == 1
    sent = sandbox.requests(COUPON_PATH)
    assert sorted(item["redemptionId"] for item in sent[0]["body"]["redemptions"]) == [51, 52]
    assert {state_of(clean_db, str(number)) for number in (51, 52)} == {"succeeded"}


def test_an_old_bill_is_sent_at_once(clean_db, client, sandbox):
    mobile = "919856565656"
    sandbox.register_coupon(56, mobile)
    publish(clean_db, events.coupon_redeemed("o-56", 56, mobile))
    publish(clean_db, events.transaction_completed("o-56", mobile))
    time.sleep(SIBLINGS_SETTLE_SECONDS)

    started = time.monotonic()
    report = reconcile_order(clean_db, client, order_ref="o-56", policy=POLICY)

    assert report.calls == 1
    assert time.monotonic() - started < SIBLINGS_SETTLE_SECONDS


def test_running_again_after_success_sends_nothing(clean_db, client, sandbox):
    sandbox.register_coupon(31, "919833333333")
    sandbox.register_points("P31", "919833333333")
    publish(
        clean_db,
        events.coupon_redeemed("o-3", 31, "919833333333"),
        events.points_redeemed("o-3", "P31", "919833333333"),
        events.transaction_completed("o-3", "919833333333"),
    )
    first = reconcile_order(clean_db, client, order_ref="o-3", policy=POLICY)
    assert first.calls == 2
    total = sandbox.stats()["total"]
    again = reconcile_order(clean_db, client, order_ref="o-3", policy=POLICY)
    assert again.calls == 0
    assert sandbox.stats()["total"] == total
    assert len(outcomes(clean_db, status="succeeded")) == 2


def test_an_order_without_its_bill_waits_and_sends_nothing(clean_db, client, sandbox):
    publish(clean_db, events.coupon_redeemed("o-4", 41))
    report = reconcile_order(clean_db, client, order_ref="o-4", policy=POLICY)
    assert report.calls == 0
    assert sandbox.stats()["total"] == 0


def test_503_then_success_retries_and_records_each_attempt(clean_db, client, sandbox):
    sandbox.register_points("P51", "919855555555")
    sandbox.script(POINTS_PATH, {"status": 503})
    publish(
        clean_db,
        events.points_redeemed("o-5", "P51", "919855555555"),
        events.transaction_completed("o-5", "919855555555"),
    )
    first = reconcile_order(clean_db, client, order_ref="o-5", policy=POLICY)
    assert first.retry_in is not None
    assert 0 < first.retry_in <= 600
    second = reconcile_order(clean_db, client, order_ref="o-5", policy=POLICY)
    assert second.retry_in is None
    trail = [(o.attempt, o.http_status, o.status) for o in outcomes(clean_db)]
    assert trail == [(1, 503, "retrying"), (2, 200, "succeeded")]
    assert sandbox.points("P51")["update_count"] == 1


def test_exhausted_retries_end_gave_up(clean_db, client, sandbox):
    sandbox.register_coupon(61, "919866666666")
    sandbox.script(COUPON_PATH, *[{"status": 502}] * 3)
    publish(
        clean_db,
        events.coupon_redeemed("o-6", 61, "919866666666"),
        events.transaction_completed("o-6", "919866666666"),
    )
    for _ in range(3):
        reconcile_order(clean_db, client, order_ref="o-6", policy=POLICY)
    statuses = [o.status for o in outcomes(clean_db)]
    assert statuses == ["retrying", "retrying", "gave_up"]
    assert state_of(clean_db, "61") == "gave_up"
    # gave_up waits for the backfill: a normal run leaves it alone.
    assert reconcile_order(clean_db, client, order_ref="o-6", policy=POLICY).calls == 0


@pytest.mark.parametrize(
    ("fault", "expected_status"),
    [
        ({"code": 461}, "retrying"),
        ({"code": 521}, "retrying"),
        ({"status": 429, "retry_after": 1}, "retrying"),
    ],
)
def test_transient_platform_codes_retry(clean_db, client, sandbox, fault, expected_status):
    sandbox.register_points("P71", "919877777777")
    sandbox.script(POINTS_PATH, fault)
    publish(
        clean_db,
        events.points_redeemed("o-7", "P71", "919877777777"),
        events.transaction_completed("o-7", "919877777777"),
    )
    report = reconcile_order(clean_db, client, order_ref="o-7", policy=POLICY)
    assert [o.status for o in outcomes(clean_db)] == [expected_status]
    if fault.get("retry_after"):
        assert report.retry_in >= fault["retry_after"]


@pytest.mark.parametrize(
    ("setup", "code"),
    [
        ("reversed", 750),  # the platform refuses to update a reversed redemption
        ("unknown", 8015),  # the platform does not know the id
        ("other_customer", 8015),
    ],
)
def test_points_errors_are_failed_with_the_platforms_code(clean_db, client, sandbox, setup, code):
    mobile = "919888888888"
    if setup == "reversed":
        sandbox.register_points("P81", mobile, state="reversed")
    elif setup == "other_customer":
        sandbox.register_points("P81", "919800000999")
    publish(
        clean_db,
        events.points_redeemed("o-8", "P81", mobile),
        events.transaction_completed("o-8", mobile),
    )
    reconcile_order(clean_db, client, order_ref="o-8", policy=POLICY)
    [outcome] = outcomes(clean_db)
    assert (outcome.code, outcome.status) == (code, "failed")
    assert outcome.http_status == 200  # v2 errors come with HTTP 200: the body decides


def test_points_identified_by_external_reference_are_updated_with_it(clean_db, client, sandbox):
    sandbox.register_points("P91", "919899999999", external_reference_number="EXT-91")
    event = events.points_redeemed("o-9", "P91", "919899999999")
    del event["redemption_id"]
    event["external_reference_number"] = "EXT-91"
    publish(clean_db, event, events.transaction_completed("o-9", "919899999999", purpose="bill"))
    reconcile_order(clean_db, client, order_ref="o-9", policy=POLICY)
    [outcome] = outcomes(clean_db)
    assert outcome.status == "succeeded"
    [request] = sandbox.requests(path=POINTS_PATH)
    assert request["body"]["externalReferenceNumber"] == "EXT-91"
    assert "redemptionId" not in request["body"]


def test_an_order_locked_by_another_worker_is_reported_busy(clean_db, client, sandbox):
    from worker.reconcile.locks import lock_scope

    publish(clean_db, events.transaction_completed("o-10"))
    with lock_scope(clean_db) as other_worker:
        assert other_worker.try_order("o-10")
        report = reconcile_order(clean_db, client, order_ref="o-10", policy=POLICY)
    assert report.busy
    assert not reconcile_order(clean_db, client, order_ref="o-10", policy=POLICY).busy
