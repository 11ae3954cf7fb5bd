"""The sweeper: finds stored work whose task was lost, so it can be enqueued again.

Safe on many hosts at once: enqueueing an order twice is harmless (tasks are idempotent and take
the order's lock), and on PostgreSQL only one sweeper at a time does the scan.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import structlog
from sqlalchemy import Engine, and_, or_, select

from models.redemptions import IN_FLIGHT, PENDING, RETRYING, PointsRedeemRequest, Redemption
from models.session import unit_of_work
from models.transactions import Transaction
from worker.observe import metrics
from worker.reconcile.locks import lock_scope
from worker.reconcile.outcomes import MAX_BACKOFF_SECONDS
from worker.settings import Settings

log = structlog.get_logger(__name__)
MAX_PER_SWEEP = 5000


@dataclass
class StuckWork:
    """What the sweeper found: work to enqueue again."""

    orders: set[str] = field(default_factory=set)
    redeem_requests: set[int] = field(default_factory=set)


def find_stuck_work(
    engine: Engine, settings: Settings, *, now: dt.datetime | None = None
) -> StuckWork:
    """Orders and redeem requests pending (or retrying past their longest back-off) too long."""
    now = now or dt.datetime.now(dt.UTC)
    pending_before = now - dt.timedelta(seconds=settings.sweep_after_seconds)
    # A retrying item may legitimately wait up to the longest back-off.
    retrying_before = now - dt.timedelta(
        seconds=max(settings.sweep_after_seconds, MAX_BACKOFF_SECONDS + 120)
    )
    found = StuckWork()
    with lock_scope(engine) as locks:
        if not locks.try_sweep():
            return found
        with unit_of_work(engine) as session:
            stale = or_(
                and_(Redemption.state == PENDING, Redemption.updated_at < pending_before),
                and_(Redemption.state == RETRYING, Redemption.updated_at < retrying_before),
            )
            found.orders.update(
                session.scalars(
                    select(Transaction.order_ref)
                    .join(Redemption, Redemption.transaction_id == Transaction.id)
                    .where(stale)
                    .distinct()
                    .limit(MAX_PER_SWEEP)
                )
            )
            stale_requests = or_(
                and_(
                    PointsRedeemRequest.state.in_((PENDING, IN_FLIGHT)),
                    PointsRedeemRequest.updated_at < pending_before,
                ),
                and_(
                    PointsRedeemRequest.state == RETRYING,
                    PointsRedeemRequest.updated_at < retrying_before,
                ),
            )
            found.redeem_requests.update(
                session.scalars(
                    select(PointsRedeemRequest.id).where(stale_requests).limit(MAX_PER_SWEEP)
                )
            )
    metrics.sweeper_reenqueued("order", len(found.orders))
    metrics.sweeper_reenqueued("redeem_request", len(found.redeem_requests))
    if found.orders or found.redeem_requests:
        log.info(
            "sweep.found", orders=len(found.orders), redeem_requests=len(found.redeem_requests)
        )
    return found
