"""The whole pipeline: an order system publishes with kombu; real workers; real everything."""

from __future__ import annotations

import base64
import hashlib
import json
import signal

import psutil
import pytest
from sqlalchemy import func, select

from models.events import InboxEvent
from models.outcomes import Outcome
from models.redemptions import Redemption
from models.session import unit_of_work
from tests.factories import events
from tests.workers import wait_for

pytestmark = pytest.mark.e2e
MOBILE = "919700000001"


def outcome_rows(engine):
    with unit_of_work(engine) as session:
        return [
            (o.redemption_id, o.code, o.status)
            for o in session.scalars(select(Outcome).order_by(Outcome.id))
        ]


def settled(engine, count):
    """True once ``count`` redemptions reached a final state."""
    with unit_of_work(engine) as session:
        done = session.scalar(
            select(func.count())
            .select_from(Redemption)
            .where(Redemption.state.in_(("succeeded", "failed", "gave_up", "unknown")))
        )
    return done >= count


def inbox(engine):
    with unit_of_work(engine) as session:
        return list(session.scalars(select(InboxEvent).order_by(InboxEvent.id)))


@pytest.mark.parametrize("bill_first", [False, True], ids=["redemptions-first", "bill-first"])
def test_both_arrival_orders_reconcile_every_item_once(workers, clean_db, sandbox, bill_first):
    sandbox.register_coupon(1001, MOBILE)
    sandbox.register_coupon(1002, MOBILE)
    sandbox.register_points("PT1", MOBILE)
    redemptions = [
        events.coupon_redeemed("e2e-1", 1001, MOBILE),
        events.coupon_redeemed("e2e-1", 1002, MOBILE),
        events.points_redeemed("e2e-1", "PT1", MOBILE),
    ]
    bill = events.transaction_completed("e2e-1", MOBILE, bill_number="B-E2E-1")
    ordered = [bill, *redemptions] if bill_first else [*redemptions, bill]
    workers.start()
    workers.publish(*(events.body(event) for event in ordered))
    wait_for(lambda: settled(clean_db, 3))
    workers.wait_until_idle()  # any stray duplicate has run before we count
    assert sorted(outcome_rows(clean_db)) == [
        ("1001", 761, "succeeded"),
        ("1002", 761, "succeeded"),
        ("PT1", None, "succeeded"),
    ]
    assert sandbox.coupon(1001)["metadata"]["transactionNumber"] == "B-E2E-1"
    assert sandbox.points("PT1")["update_count"] == 1


def test_duplicate_delivery_changes_nothing_and_sends_nothing_twice(workers, clean_db, sandbox):
    sandbox.register_coupon(2001, MOBILE)
    coupon = events.body(events.coupon_redeemed("e2e-2", 2001, MOBILE))
    bill = events.body(events.transaction_completed("e2e-2", MOBILE))
    workers.start()
    workers.publish(coupon, bill, coupon, bill, coupon)
    wait_for(lambda: settled(clean_db, 1))
    wait_for(lambda: len(inbox(clean_db)) == 2)
    workers.wait_until_idle()
    assert outcome_rows(clean_db) == [("2001", 761, "succeeded")]
    assert sandbox.coupon(2001)["update_count"] == 1
    # Secrets stay secret: the worker's whole log holds neither the password nor its forms.
    log = workers.log_of("w1")
    assert "loyalty.call" in log
    digest = hashlib.md5(b"server123").hexdigest()
    header = base64.b64encode(f"store.server:{digest}".encode()).decode()
    for secret in ("server123", digest, header):
        assert secret not in log


def test_malformed_messages_are_rejected_on_record_and_the_worker_keeps_consuming(
    workers, clean_db, sandbox
):
    sandbox.register_coupon(3001, MOBILE)
    bad = [
        b"this is not json",
        json.dumps({"type": "coupon.redeemed", "event_id": "bad-1"}).encode(),
        json.dumps(events.coupon_redeemed("e2e-3", 3002) | {"redemption_id": "x"}).encode(),
    ]
    worker = workers.start()
    workers.publish(*bad)
    workers.publish(
        events.body(events.coupon_redeemed("e2e-3", 3001, MOBILE)),
        events.body(events.transaction_completed("e2e-3", MOBILE)),
    )
    wait_for(lambda: settled(clean_db, 1))
    rejected = [row for row in inbox(clean_db) if row.status == "rejected"]
    reasons = sorted(row.reason for row in rejected)
    assert len(rejected) == 3
    assert any("body is not JSON" in reason for reason in reasons)
    assert any("field 'order_ref'" in reason for reason in reasons)
    assert any("field 'redemption_id'" in reason for reason in reasons)
    assert worker.poll() is None
    assert "intake.rejected" in workers.log_of("w1")


def test_a_pool_process_killed_mid_task_still_reconciles_the_order_once(workers, clean_db, sandbox):
    sandbox.register_coupon(4001, MOBILE)
    # The first call hangs long enough to be killed in the middle of it.
    sandbox.script("/v2/coupon/redeem", {"action": "slow", "seconds": 4})
    worker = workers.start(concurrency=1)
    workers.publish(
        events.body(events.coupon_redeemed("e2e-4", 4001, MOBILE)),
        events.body(events.transaction_completed("e2e-4", MOBILE)),
    )
    wait_for(lambda: sandbox.stats()["total"] >= 1, timeout=30)
    [child] = workers.pool_children(worker)
    child.send_signal(signal.SIGKILL)
    wait_for(lambda: settled(clean_db, 1), timeout=60)
    workers.wait_until_idle()
    assert outcome_rows(clean_db) == [("4001", 761, "succeeded")]
    assert worker.poll() is None


def test_a_database_that_is_down_keeps_messages_until_it_is_back(
    workers, clean_db, sandbox, pg_url
):
    from models.session import build_engine
    from tests import services
    from worker.ops import migrate

    # A database that does not exist yet is as down as one can be.
    missing = services.create_database("recon_down")
    services.drop_database(missing)
    worker = workers.start(RECON_DATABASE_URL=missing)
    workers.publish(events.body(events.transaction_completed("e2e-5", MOBILE)))
    wait_for(lambda: "intake.paused" in workers.log_of("w1"), timeout=30)
    assert worker.poll() is None  # still up
    services.create_database(name=missing.rsplit("/", 1)[1])
    migrate.upgrade(missing)
    engine = build_engine(missing)
    try:
        wait_for(lambda: len(inbox(engine)) == 1, timeout=30)
    finally:
        engine.dispose()
        workers.stop()
        services.drop_database(missing)


def test_two_worker_processes_together_stay_under_the_rate_limit(workers, clean_db, sandbox):
    per_minute = 20  # for everyone together; the platform counts a strict 60 s window

    def publish(numbers: range) -> None:
        for number in numbers:
            mobile = f"91960000{number:04d}"
            sandbox.register_points(f"RL{number}", mobile)
            workers.publish(
                events.body(events.points_redeemed(f"rl-{number}", f"RL{number}", mobile)),
                events.body(events.transaction_completed(f"rl-{number}", mobile)),
            )

    # One turn of the budget's work first: it goes at once (more open than a turn would be
    # paced from the first request, one call per 3 s, and never meet a spent budget).
    publish(range(per_minute))
    sandbox.configure(rate_limit_per_minute=per_minute)
    # A task per order, so both workers hold orders when the budget runs out (ten to a task,
    # the first two tasks could spend it all and the third meet every refusal in one worker).
    env = {"LOYALTY_RATE_LIMIT_PER_MINUTE": str(per_minute), "RECON_ORDERS_PER_TASK": "1"}
    workers.start("w1", **env)
    workers.start("w2", **env)
    wait_for(lambda: sandbox.stats()["total"] >= per_minute, timeout=60)
    # Then more, with the budget spent: both workers are refused and hand their tasks back.
    publish(range(per_minute, per_minute + 10))
    wait_for(
        lambda: all("reconcile.deferred" in workers.log_of(name) for name in ("w1", "w2")),
        timeout=60,
    )
    stats = sandbox.stats()
    assert stats["total"] == per_minute  # not one more in this window
    assert stats["throttled"] == 0
    assert stats["by_status"].get("429", 0) == 0


def test_a_lost_redeem_answer_takes_the_points_once_through_the_whole_pipeline(
    workers, clean_db, sandbox
):
    sandbox.script("/v1.1/points/redeem", {"action": "lost"})
    request = events.redeem_requested("e2e-6", MOBILE, points="30")
    workers.start()
    workers.publish(events.body(request), events.body(request))  # redelivered, too
    workers.publish(events.body(events.transaction_completed("e2e-6", MOBILE)))
    wait_for(lambda: settled(clean_db, 1), timeout=60)
    workers.wait_until_idle()
    stats = sandbox.stats()
    assert len(stats["redeem_requests"]) == 1  # one distinct external_reference_number
    assert list(stats["redeem_effects"].values()) == [1]
    assert stats["points_taken"] == {MOBILE: "30"}
    with unit_of_work(clean_db) as session:
        statuses = session.scalars(
            select(Outcome.status).where(Outcome.kind == "points_redeem").order_by(Outcome.id)
        ).all()
    # The lost answer was an attempt whose effect was not known (retrying); the retry with the
    # same reference was answered with the original redemption (succeeded), once.
    assert statuses == ["retrying", "succeeded"]


def test_a_worker_without_credentials_refuses_to_start_with_a_clear_message(workers):
    worker = workers.start(LOYALTY_API_USERNAME="")
    assert worker.wait(timeout=30) != 0
    assert "LOYALTY_API_USERNAME is not set" in workers.log_of("w1")


def _publish_coupon_order(workers, sandbox, order: str, coupon_id: int) -> None:
    """One order of one coupon: the coupon known to the sandbox, its two events published."""
    mobile = f"9197{coupon_id:08d}"
    sandbox.register_coupon(coupon_id, mobile)
    workers.publish(
        events.body(events.coupon_redeemed(order, coupon_id, mobile)),
        events.body(events.transaction_completed(order, mobile)),
    )


def test_orders_ready_together_go_a_few_to_a_task_and_one_that_must_wait_goes_on_alone(
    workers, clean_db, sandbox
):
    """Orders queued before the worker starts reach the intake in one batch: they go out a few
    to a ``recon.reconcile_orders`` task. The first call answers 503, so that order must wait:
    it goes on as a ``recon.reconcile_order`` task of its own, and the others do not wait."""
    orders = 4
    sandbox.script("/v2/coupon/redeem", {"status": 503})
    for number in range(orders):
        _publish_coupon_order(workers, sandbox, f"e2e-batch-{number}", 6100 + number)
    workers.start(concurrency=1, RECON_ORDERS_PER_TASK=str(orders))
    wait_for(lambda: settled(clean_db, orders), timeout=60)
    workers.wait_until_idle()
    rows = outcome_rows(clean_db)
    assert sorted(status for _, _, status in rows) == ["retrying"] + ["succeeded"] * orders
    (waited,) = [ref for ref, _, status in rows if status == "retrying"]
    assert [status for ref, _, status in rows if ref == waited] == ["retrying", "succeeded"]
    assert sandbox.stats()["total"] == orders + 1
    log = workers.log_of("w1")
    assert "recon.reconcile_orders" in log
    assert "recon.reconcile_order[" in log  # the order that waited, on its own


def test_a_pool_process_past_its_memory_bound_is_replaced_and_nothing_is_lost(
    workers, clean_db, sandbox
):
    """``RECON_WORKER_MAX_MEMORY_MB``: a pool process past the bound is replaced after its task
    (Celery's ``worker_max_memory_per_child``). At 1 MB every task's process is replaced; every
    order is still reconciled, each call made once."""
    worker = psutil.Process(
        workers.start(concurrency=1, RECON_ORDERS_PER_TASK="1", RECON_WORKER_MAX_MEMORY_MB="1").pid
    )
    wait_for(lambda: len(worker.children()) == 1, timeout=60)
    first_pool = {child.pid for child in worker.children()}
    orders = 3
    for number in range(orders):
        _publish_coupon_order(workers, sandbox, f"e2e-mem-{number}", 6200 + number)
        wait_for(lambda n=number: settled(clean_db, n + 1), timeout=60)
    workers.wait_until_idle()
    assert sorted(status for _, _, status in outcome_rows(clean_db)) == ["succeeded"] * orders
    assert sandbox.stats()["total"] == orders
    wait_for(lambda: len(worker.children()) == 1, timeout=30)
    assert not first_pool & {child.pid for child in worker.children()}  # replaced
    assert worker.is_running()
