"""The opening every piece of reconcile work shares: one worker per order, and a blocked call is
deferred, not failed and not counted as an attempt."""

from __future__ import annotations

from sqlalchemy import func, select, text

from models.outcomes import Outcome
from models.redemptions import PointsRedeemRequest
from models.session import unit_of_work
from tests.factories import events
from worker.budget.limiter import GlobalRateLimiter
from worker.intake.store import store_message
from worker.loyalty import LoyaltyClient
from worker.reconcile.claim import claimed
from worker.reconcile.locks import CustomerBusy, lock_scope
from worker.reconcile.outcomes import Policy
from worker.reconcile.redeem import redeem_points

POLICY = Policy(max_attempts=3, retry_base_seconds=1)
MOBILE = "919744400001"


def outcome_count(engine) -> int:
    with unit_of_work(engine) as session:
        return session.scalar(select(func.count()).select_from(Outcome)) or 0


def test_work_another_worker_holds_is_not_claimed_twice(clean_db):
    with lock_scope(clean_db) as other:
        assert other.try_order("o-held")
        with claimed(clean_db, lambda locks: locks.try_order("o-held")) as claim:
            assert claim is None
    with claimed(clean_db, lambda locks: locks.try_order("o-held")) as claim:
        assert claim is not None


def _free(engine, order_ref: str) -> bool:
    """Another worker could take the order's lock now (and lets it go at once)."""
    with lock_scope(engine) as other:
        return other.try_order(order_ref)


def _customer_free(engine, key: str) -> bool:
    """Another session could take the customer's lock now (key space 2: reconcile/locks.py)."""
    with engine.connect() as conn:
        got = conn.execute(text("SELECT pg_try_advisory_lock(2, hashtext(:k))"), {"k": key})
        if got.scalar():
            conn.execute(text("SELECT pg_advisory_unlock(2, hashtext(:k))"), {"k": key})
            return True
        return False


def test_orders_one_after_the_other_in_one_scope_let_go_of_each_lock_with_the_next_order(clean_db):
    # A task of several orders holds one lock scope: an order's lock (and its customer's) goes
    # with the next order's first statement, not with a round trip of its own.
    with lock_scope(clean_db) as scope:
        with claimed(clean_db, lambda locks: locks.try_order("o-1"), scope=scope) as first:
            assert first is not None
            with first.locks.customer("mobile:1"):
                pass
        # Still held, until the scope's next statement.
        assert not _free(clean_db, "o-1")
        assert not _customer_free(clean_db, "mobile:1")

        with claimed(clean_db, lambda locks: locks.try_order("o-2"), scope=scope) as second:
            assert second is not None
            # Let go by the statement that took o-2, the customer's lock with the order's.
            assert _free(clean_db, "o-1")
            assert _customer_free(clean_db, "mobile:1")
            assert not _free(clean_db, "o-2")
            with second.locks.customer("mobile:1"):
                assert not _customer_free(clean_db, "mobile:1")
        # An order found busy or done hands on what it held too.
        with claimed(clean_db, lambda locks: locks.try_open_order("o-3"), scope=scope) as third:
            assert third is None
        assert _free(clean_db, "o-2")
    assert _free(clean_db, "o-3")


def test_a_busy_customer_defers_the_block_and_undoes_what_it_did_not_commit(clean_db):
    with claimed(clean_db, lambda locks: locks.try_order("o-busy")) as claim:
        assert claim is not None
        claim.session.add(
            Outcome(kind="coupon", attempt=1, status="succeeded", message="never committed")
        )
        claim.session.flush()
        raise CustomerBusy("customer mobile:1 stayed busy for 30000 ms")

    assert claim.deferred_for == 5.0
    assert claim.deferred_because == "customer mobile:1 stayed busy for 30000 ms"
    assert outcome_count(clean_db) == 0


def test_a_spent_budget_defers_a_points_redeem_without_an_attempt(clean_db, settings, sandbox):
    with unit_of_work(clean_db) as session:
        stored = store_message(session, events.body(events.redeem_requested("c-1", MOBILE)))
        session.commit()
    [request_id] = stored.redeem_requests
    limiter = GlobalRateLimiter(clean_db, key="claim-test", per_minute=1, max_wait_seconds=0.2)
    assert limiter.try_acquire() == 0.0  # the whole budget, spent elsewhere
    with LoyaltyClient.from_settings(settings, throttle=limiter.acquire) as client:
        report = redeem_points(clean_db, client, request_id=request_id, policy=POLICY)

    assert report.status is None
    assert report.retry_in is not None
    assert report.retry_in > 50  # the slot comes free a window after it was taken
    with unit_of_work(clean_db) as session:
        request = session.get(PointsRedeemRequest, request_id)
        assert (request.state, request.attempts) == ("retrying", 0)
    assert outcome_count(clean_db) == 0
    assert sandbox.stats()["total"] == 0  # nothing was sent
