"""429 and 521 through the product: a 429 is recorded, costs no attempt and pauses the key for
every process; a 521 delays only its customer. Live work goes ahead of re-driven work."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from models.outcomes import Outcome
from models.redemptions import PointsRedeemRequest, Redemption
from models.session import unit_of_work
from tests.factories import events
from tests.workers import wait_for
from worker.intake.store import store_message
from worker.reconcile import resources
from worker.reconcile.orders import reconcile_order
from worker.reconcile.redeem import redeem_points

COUPON_PATH = "/v2/coupon/redeem"
REDEEM_PATH = "/v1.1/points/redeem"
MOBILE = "919733300001"
OTHER = "919733300002"


def store(engine, *items):
    stored = []
    with unit_of_work(engine) as session:
        for event in items:
            stored.append(store_message(session, events.body(event)))
        session.commit()
    return stored


def trail(engine, **where):
    with unit_of_work(engine) as session:
        query = select(Outcome).order_by(Outcome.id)
        for name, value in where.items():
            query = query.where(getattr(Outcome, name) == value)
        return [(o.attempt, o.http_status, o.status) for o in session.scalars(query)]


@pytest.fixture
def product(settings, clean_db):
    """The worker's own resources: the shared limiter wired into the client."""
    built = resources.build(settings)
    yield built
    built.client.close()


def wait_out_the_pause(limiter) -> None:
    wait_for(lambda: limiter.paused_for() == 0.0, timeout=30, interval=0.1)


def test_429s_are_recorded_cost_no_attempt_and_pause_the_key(product, clean_db, sandbox):
    sandbox.register_coupon(501, MOBILE)
    # More 429s in a row than RECON_MAX_ATTEMPTS (3 here): none of them may count.
    sandbox.script(COUPON_PATH, *[{"status": 429, "retry_after": 1}] * 4)
    store(
        clean_db,
        events.coupon_redeemed("t-1", 501, MOBILE),
        events.transaction_completed("t-1", MOBILE),
    )
    for _ in range(4):
        report = reconcile_order(clean_db, product.client, order_ref="t-1", policy=product.policy)
        assert report.retry_in is not None
        assert report.retry_in >= 1
        # Every process now waits: the limiter itself refuses the key until Retry-After passed.
        assert product.limiter.paused_for() > 0
        wait_out_the_pause(product.limiter)
    report = reconcile_order(clean_db, product.client, order_ref="t-1", policy=product.policy)

    assert report.statuses["succeeded"] == 1
    rows = trail(clean_db)
    assert rows[:4] == [(0, 429, "retrying")] * 4  # on record, attempt count untouched
    assert rows[4] == (1, 200, "succeeded")  # the first real attempt
    assert sandbox.coupon(501)["update_count"] == 1


def test_a_429_never_brings_a_points_redeem_closer_to_unknown(product, clean_db, sandbox):
    [stored] = store(clean_db, events.redeem_requested("t-2", MOBILE, points="30"))
    [request_id] = stored.redeem_requests
    # As many 429s as RECON_MAX_ATTEMPTS, one without Retry-After (the default pause applies).
    with_retry_after = {"status": 429, "retry_after": 1}
    sandbox.script(REDEEM_PATH, {"status": 429}, with_retry_after, with_retry_after)
    for _ in range(3):
        report = redeem_points(
            clean_db, product.client, request_id=request_id, policy=product.policy
        )
        assert report.status == "retrying"
        wait_out_the_pause(product.limiter)
    report = redeem_points(clean_db, product.client, request_id=request_id, policy=product.policy)

    assert report.status == "succeeded"
    with unit_of_work(clean_db) as session:
        request = session.get(PointsRedeemRequest, request_id)
        assert (request.state, request.attempts, request.ambiguous) == ("succeeded", 1, False)
    assert sandbox.stats()["points_taken"] == {MOBILE: "30"}


def test_a_521_delays_only_its_customer(product, clean_db, sandbox):
    sandbox.register_coupon(511, MOBILE)
    sandbox.register_coupon(512, OTHER)
    store(
        clean_db,
        events.coupon_redeemed("t-3", 511, MOBILE),
        events.coupon_redeemed("t-3", 512, OTHER),
        events.transaction_completed(
            "t-3",
            MOBILE,
            redemptions=[
                {"kind": "coupon", "redemption_id": 511},
                {"kind": "coupon", "redemption_id": 512},
            ],
        ),
    )
    sandbox.script(COUPON_PATH, {"code": 521})  # the first customer's call

    report = reconcile_order(clean_db, product.client, order_ref="t-3", policy=product.policy)

    assert report.calls == 2  # the other customer was not held up
    assert sorted(report.statuses.items()) == [("retrying", 1), ("succeeded", 1)]
    assert product.limiter.paused_for() == 0.0  # and the key was not paused
    assert product.limiter.try_acquire() == 0.0


# --- Real worker processes ---------------------------------------------------------------------


def _items_in(engine, order_refs, state):
    with unit_of_work(engine) as session:
        return session.scalar(
            select(func.count())
            .select_from(Redemption)
            .where(Redemption.order_ref.in_(order_refs), Redemption.state == state)
        )


@pytest.mark.e2e
def test_one_429_burst_pauses_every_worker(workers, clean_db, sandbox):
    orders = [f"p-{n}" for n in range(13)]
    for n in range(len(orders)):
        sandbox.register_coupon(600 + n, f"91974000{n:04d}")

    def publish(numbered):
        workers.publish(
            *[
                events.body(event)
                for n, order_ref in numbered
                for event in (
                    events.coupon_redeemed(order_ref, 600 + n, f"91974000{n:04d}"),
                    events.transaction_completed(order_ref, f"91974000{n:04d}"),
                )
            ]
        )

    workers.start("w1")
    workers.start("w2")
    publish([(0, orders[0])])  # both workers up and working
    wait_for(lambda: _items_in(clean_db, orders[:1], "succeeded") == 1, timeout=60)
    # The platform throttles the key for 3 s: every request in that time gets a 429.
    sandbox.throttle(3)
    publish(list(enumerate(orders))[1:])
    wait_for(lambda: _items_in(clean_db, orders, "succeeded") == len(orders), timeout=120)

    throttled = sandbox.stats()["by_status"].get("429", 0)
    # The first 429 pauses both workers; at most the request the other had in flight meets
    # the throttle as well. Every item still took exactly one attempt.
    assert 1 <= throttled <= 2
    succeeded = trail(clean_db, status="succeeded")
    assert [attempt for attempt, _, _ in succeeded] == [1] * len(orders)


@pytest.mark.e2e
def test_live_orders_go_ahead_of_a_backfill(workers, clean_db, sandbox):
    from worker.app import configure
    from worker.reconcile import tasks

    limit = 30
    sandbox.configure(rate_limit_per_minute=limit)
    backfill = [f"b-{n}" for n in range(20)]
    live = [f"l-{n}" for n in range(5)]
    for n in range(len(backfill + live)):
        sandbox.register_coupon(700 + n, f"91975000{n:04d}")
    # The backfill's orders are stored but not enqueued by the intake: the backfill re-drives
    # them through the re-drive queue.
    store(
        clean_db,
        *[
            event
            for n, order_ref in enumerate(backfill)
            for event in (
                events.coupon_redeemed(order_ref, 700 + n, f"91975000{n:04d}"),
                events.transaction_completed(order_ref, f"91975000{n:04d}"),
            )
        ],
    )
    env = {"LOYALTY_RATE_LIMIT_PER_MINUTE": str(limit)}
    configure(workers.settings)
    for order_ref in backfill:
        tasks.enqueue_redriven(order_ref)
    workers.start("w1", **env)
    workers.start("w2", **env)
    wait_for(lambda: _items_in(clean_db, backfill, "succeeded") >= 1, timeout=60)
    workers.publish(
        *[
            events.body(event)
            for n, order_ref in enumerate(live, start=len(backfill))
            for event in (
                events.coupon_redeemed(order_ref, 700 + n, f"91975000{n:04d}"),
                events.transaction_completed(order_ref, f"91975000{n:04d}"),
            )
        ]
    )
    wait_for(lambda: _items_in(clean_db, live, "succeeded") == len(live), timeout=60)

    # Live work did not queue behind the backfill: when every live order was done, the
    # backfill (paced, a share of the budget) was still going.
    assert _items_in(clean_db, backfill, "succeeded") < len(backfill)
    assert sandbox.stats()["throttled"] == 0


@pytest.mark.e2e
def test_a_backlog_below_the_budget_goes_out_at_once(workers, clean_db, sandbox):
    limit, orders = 30, [f"u-{n}" for n in range(20)]
    sandbox.configure(rate_limit_per_minute=limit)  # the platform's strict 60 s window
    for n, _ in enumerate(orders):
        sandbox.register_coupon(800 + n, f"91976000{n:04d}")
    workers.publish(
        *[
            events.body(event)
            for n, order_ref in enumerate(orders)
            for event in (
                events.coupon_redeemed(order_ref, 800 + n, f"91976000{n:04d}"),
                events.transaction_completed(order_ref, f"91976000{n:04d}"),
            )
        ]
    )
    env = {"LOYALTY_RATE_LIMIT_PER_MINUTE": str(limit)}
    workers.start("w1", **env)
    workers.start("w2", **env)
    wait_for(lambda: _items_in(clean_db, orders, "succeeded") == len(orders), timeout=120)

    sent = sorted(entry["time"] for entry in sandbox.requests(COUPON_PATH, limit=100))
    assert len(sent) == len(orders)
    assert sandbox.stats()["throttled"] == 0
    # A limiter that spreads the budget evenly (60 / 30 = 2 s apart) needs 38 s for these 20
    # calls; the window allows all of them at once, and they went as fast as the workers could.
    assert sent[-1] - sent[0] < (len(orders) - 1) * 60 / limit


def test_the_nightly_backfill_hands_its_orders_to_the_redrive_queue_path(clean_db, sandbox):
    from worker.ops import backfill

    store(
        clean_db,
        events.coupon_redeemed("n-1", 901, MOBILE),
        events.transaction_completed("n-1", MOBILE),
    )
    with unit_of_work(clean_db) as session:
        session.execute(Redemption.__table__.update().values(state="gave_up", attempts=3))
        session.commit()
    handed: list[str] = []

    summary = backfill.run_backfill(
        clean_db, None, policy=None, options=backfill.Options(), hand_off=handed.append
    )

    assert handed == ["n-1"]  # to be reconciled by a re-drive task, not inside this one
    assert summary.orders == 1
    assert _items_in(clean_db, ["n-1"], "pending") == 1  # a fresh round of attempts
    assert sandbox.stats()["total"] == 0  # nothing was sent from the backfill itself
