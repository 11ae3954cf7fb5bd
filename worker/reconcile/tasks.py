"""Celery tasks: a few lines each; the work is in plain functions."""

from __future__ import annotations

import random
from typing import Any

import structlog
from celery import Task
from celery.exceptions import Reject

from models.session import database_unavailable
from worker.app import app, settings_of
from worker.budget import limiter
from worker.intake.store import Stored
from worker.observe import metrics
from worker.ops import backfill, sweep
from worker.queues import REDRIVE_QUEUE
from worker.reconcile import deliveries, orders, redeem, resources
from worker.reconcile.outcomes import MAX_BACKOFF_SECONDS

log = structlog.get_logger(__name__)

#: Busy/throttled retries are not attempts; this only bounds a pathological loop. Past it the
#: item stays open in the database and the sweeper or the backfill takes it again.
MAX_TASK_RETRIES = 200


class ReconTask(Task):
    """Base of every task: per-process resources and the one way to schedule a retry."""

    abstract = True

    @property
    def resources(self) -> resources.Resources:
        return resources.for_settings(settings_of(self.app))

    def again_in(self, delay: float | None) -> None:
        if delay is not None:
            raise self.retry(countdown=delay, max_retries=MAX_TASK_RETRIES)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._within_delivery_limit()
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            # The database went away under the task (a restart, a failover, a connection the
            # restart invalidated): the work is intact, so it is retried, never failed.
            if not database_unavailable(exc):
                raise
            delay = min(MAX_BACKOFF_SECONDS, 2.0 ** min(self.request.retries, 9))
            log.warning("task.database_unavailable", error=type(exc).__name__, retry_in=delay)
            raise self.retry(
                exc=exc, countdown=random.uniform(delay / 2, delay), max_retries=MAX_TASK_RETRIES
            ) from exc

    def _within_delivery_limit(self) -> None:
        if not (self.request.delivery_info or {}).get("redelivered") or self.request.is_eager:
            return
        settings = self.resources.settings
        try:
            count = deliveries.count_redelivery(
                self.resources.engine, task_id=str(self.request.id), task_name=self.name
            )
        except Exception as exc:
            if database_unavailable(exc):
                return  # the body will meet the same outage and retry
            raise
        if count > settings.delivery_limit:
            reason = (
                f"{self.name} came back {count} times (RECON_DELIVERY_LIMIT "
                f"{settings.delivery_limit}); dead-lettered so it cannot loop"
            )
            log.error("task.delivery_limit", reason=reason)
            raise Reject(reason, requeue=False)


def _busy_delay() -> float:
    return random.uniform(1.0, 3.0)


@app.task(
    bind=True,
    base=ReconTask,
    name="recon.reconcile_order",
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=MAX_TASK_RETRIES,
)
def reconcile_order(self: ReconTask, order_ref: str, redriven: bool = False) -> dict[str, Any]:
    """Attach the order's bill to its open redemptions (idempotent)."""
    r = self.resources
    with limiter.tier(limiter.REDRIVE if redriven else limiter.LIVE):
        report = orders.reconcile_order(r.engine, r.client, order_ref=order_ref, policy=r.policy)
    self.again_in(_busy_delay() if report.busy else report.retry_in)
    return report.as_dict()


@app.task(
    bind=True,
    base=ReconTask,
    name="recon.redeem_points",
    acks_late=True,
    reject_on_worker_lost=True,
    max_retries=MAX_TASK_RETRIES,
)
def redeem_points(self: ReconTask, request_id: int, redriven: bool = False) -> dict[str, Any]:
    """Redeem a customer's points once (same external reference on every attempt)."""
    r = self.resources
    with limiter.tier(limiter.REDRIVE if redriven else limiter.LIVE):
        report = redeem.redeem_points(r.engine, r.client, request_id=request_id, policy=r.policy)
    if report.status == "succeeded" and report.order_ref:
        enqueue_order(report.order_ref, redriven=redriven)
    self.again_in(_busy_delay() if report.busy else report.retry_in)
    return {"request_id": request_id, "status": report.status}


@app.task(bind=True, base=ReconTask, name="recon.sweep", acks_late=False)
def sweep_stuck_work(self: ReconTask) -> dict[str, int]:
    """Re-enqueue work pending for longer than RECON_SWEEP_AFTER_SECONDS."""
    found = sweep.find_stuck_work(self.resources.engine, self.resources.settings)
    enqueue(found, redriven=True)
    return {"orders": len(found.orders), "redeem_requests": len(found.redeem_requests)}


@app.task(bind=True, base=ReconTask, name="recon.backfill", acks_late=False)
def nightly_backfill(self: ReconTask) -> dict[str, int]:
    """Re-drive every open redemption that has its bill (the nightly run)."""
    r = self.resources
    try:
        # Hands each order to the re-drive queue rather than holding this process for hours.
        summary = backfill.run_backfill(
            r.engine,
            r.client,
            policy=r.policy,
            options=backfill.Options(),
            hand_off=enqueue_redriven,
        )
    except Exception:
        metrics.backfill_run(succeeded=False)  # the ReconBackfillFailing alert reads this
        raise
    metrics.backfill_run(succeeded=True)
    return summary.as_dict()


def _route(redriven: bool) -> dict[str, Any]:
    return {"kwargs": {"redriven": True}, "queue": REDRIVE_QUEUE} if redriven else {}


def enqueue_order(order_ref: str, delay: float | None = None, *, redriven: bool = False) -> None:
    reconcile_order.apply_async(args=[order_ref], countdown=delay, **_route(redriven))


def enqueue_redriven(order_ref: str, delay: float | None = None) -> None:
    """Backfill and sweeper work: the re-drive queue, a share of the budget while live waits."""
    enqueue_order(order_ref, delay, redriven=True)


def enqueue(stored: Stored, *, redriven: bool = False) -> None:
    """Call only after the rows these point at are committed."""
    for order_ref in sorted(stored.orders):
        reconcile_order.apply_async(args=[order_ref], **_route(redriven))
    for request_id in sorted(stored.redeem_requests):
        redeem_points.apply_async(args=[request_id], **_route(redriven))
