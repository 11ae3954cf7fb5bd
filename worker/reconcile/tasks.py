"""Celery tasks: a few lines each; the work is in plain functions.

``recon_task`` is the one task contract: every task of the product (here and in
``worker/ops/tasks.py``) is declared with it, and what they all promise comes from ``ReconTask``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

import structlog
from celery import Task
from celery.exceptions import Reject

from models.session import database_unavailable
from worker.app import app
from worker.budget import limiter
from worker.queues import DELIVERY_COUNT_HEADER, REDRIVE_QUEUE, queue_of_routing_key
from worker.reconcile import deliveries, orders, redeem, resources
from worker.reconcile.locks import LockScope, lock_scope
from worker.reconcile.outcomes import MAX_BACKOFF_SECONDS
from worker.settings import settings_of

log = structlog.get_logger(__name__)

#: Busy/throttled retries are not attempts; this only bounds a pathological loop. Past it the
#: item stays open in the database and the sweeper or the backfill takes it again.
MAX_TASK_RETRIES = 200
#: ``RECON_ORDERS_PER_TASK``'s bound: a longer list (a forged or replayed message) is cut.
MAX_ORDERS_PER_TASK = 100


class ReconTask(Task):
    """Base of every task: the delivery contract, per-process resources, and the one way to
    schedule a retry."""

    abstract = True
    # At least once: ack after the body ran, requeue if the pool process died under it. The
    # bodies are idempotent (each takes its order's lock and works only on what is still open).
    acks_late = True
    reject_on_worker_lost = True
    max_retries = MAX_TASK_RETRIES

    @property
    def resources(self) -> resources.Resources:
        return resources.for_settings(settings_of(self.app))

    def again_in(self, delay: float | None) -> None:
        if delay is not None:
            raise self.retry(countdown=whole_seconds(delay))

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
            countdown = whole_seconds(random.uniform(delay / 2, delay))
            raise self.retry(exc=exc, countdown=countdown) from exc

    def returns(self) -> int:
        """How often this message came back to its queue: RabbitMQ counts it on a quorum queue
        and says so in ``x-delivery-count`` (absent on a first delivery). A retry is a new
        message, so its count starts again; only ``redelivered`` messages are read, so a count a
        retry copied from the message before it is never taken for its own."""
        if not (self.request.delivery_info or {}).get("redelivered") or self.request.is_eager:
            return 0
        value = getattr(self.request, DELIVERY_COUNT_HEADER, None)
        try:
            return int(value or 0)
        except (TypeError, ValueError):
            return 0

    def _within_delivery_limit(self) -> None:
        count = self.returns()
        if count == 0:
            return
        settings = self.resources.settings
        if count > settings.delivery_limit:
            reason = (
                f"{self.name} came back {count} times (RECON_DELIVERY_LIMIT "
                f"{settings.delivery_limit}); dead-lettered so it cannot loop"
            )
            info = self.request.delivery_info or {}
            try:
                deliveries.record_dead_letter(
                    self.resources.engine,
                    task_name=self.name,
                    task_id=str(self.request.id),
                    args=self.request.args,
                    kwargs=self.request.kwargs,
                    queue=queue_of_routing_key(str(info.get("routing_key") or "")),
                    reason=reason,
                )
            except Exception as exc:
                if database_unavailable(exc):
                    return  # unrecorded, it could never be replayed: the body meets the outage
                raise
            log.error("task.delivery_limit", reason=reason)
            raise Reject(reason, requeue=False)


def recon_task(name: str, **options: Any) -> Callable[[Callable[..., Any]], Task]:
    """Declare a task: a stable dotted ``name`` (``recon.<what>``), bound to its ``ReconTask``;
    ``options`` are where it departs from the contract, declared where a reader sees them."""
    declare: Callable[[Callable[..., Any]], Task] = app.task(
        bind=True, base=ReconTask, name=name, **options
    )
    return declare


def whole_seconds(delay: float) -> int:
    """A countdown native delayed delivery can take: whole seconds, at least one (kombu's
    delayed-delivery routing key counts seconds, and refuses a countdown that rounds to 0)."""
    return max(1, math.ceil(delay)) if delay > 0 else 0


def _busy_delay() -> float:
    return random.uniform(1.0, 3.0)


def _budget_tier(redriven: bool) -> AbstractContextManager[None]:
    """The budget's tier of this work."""
    return limiter.tier(limiter.REDRIVE if redriven else limiter.LIVE)


@recon_task("recon.reconcile_order")
def reconcile_order(self: ReconTask, order_ref: str, redriven: bool = False) -> dict[str, Any]:
    """Attach the order's bill to its open redemptions (idempotent)."""
    r = self.resources
    with _budget_tier(redriven):
        report = orders.reconcile_order(r.engine, r.client, order_ref=order_ref, policy=r.policy)
    self.again_in(_busy_delay() if report.busy else report.retry_in)
    return report.as_dict()


@recon_task("recon.reconcile_orders")
def reconcile_orders(self: ReconTask, order_refs: list[str]) -> dict[str, Any]:
    """Several orders one intake batch made ready, one after the other (each idempotent). An
    order that must wait (the budget, another worker on it) or that fails goes on as a task of
    its own, as if its own task had been sent back: the rest of the batch does not wait for it."""
    r = self.resources
    refs = [order_refs] if isinstance(order_refs, str) else [str(ref) for ref in order_refs]
    if len(refs) > MAX_ORDERS_PER_TASK:
        # Not the intake's (RECON_ORDERS_PER_TASK is at most this): the orders left out stay
        # open in the database, where the sweeper finds them.
        log.warning("reconcile_orders.cut", orders=len(refs), kept=MAX_ORDERS_PER_TASK)
        refs = refs[:MAX_ORDERS_PER_TASK]
    sent_on = 0
    # One lock scope for the batch: one connection, and each order's locks let go with the next
    # order's first statement (a round trip less per order).
    with _budget_tier(redriven=False), lock_scope(r.engine) as scope:
        for order_ref in refs:
            with structlog.contextvars.bound_contextvars(order_ref=order_ref):
                delay = _reconcile_one(r, order_ref, scope)
                if delay is not None:
                    enqueue_order(order_ref, delay)
                    sent_on += 1
    return {"orders": len(refs), "sent_on": sent_on}


def _reconcile_one(r: resources.Resources, order_ref: str, scope: LockScope) -> float | None:
    """Seconds until the order should be tried again (0: at once), or None when it is done."""
    try:
        report = orders.reconcile_order(
            r.engine, r.client, order_ref=order_ref, policy=r.policy, scope=scope
        )
    except Exception as exc:
        if database_unavailable(exc):
            raise  # the whole batch is retried (the orders already done are no-ops then)
        # This order's own task will meet the error again, where ops see it fail.
        log.exception("reconcile_orders.order_failed", error=type(exc).__name__)
        return 0.0
    return _busy_delay() if report.busy else report.retry_in


@recon_task("recon.redeem_points")
def redeem_points(self: ReconTask, request_id: int, redriven: bool = False) -> dict[str, Any]:
    """Redeem a customer's points once (same external reference on every attempt)."""
    r = self.resources
    with _budget_tier(redriven):
        report = redeem.redeem_points(r.engine, r.client, request_id=request_id, policy=r.policy)
    if report.status == "succeeded" and report.order_ref:
        enqueue_order(report.order_ref, redriven=redriven)
    self.again_in(_busy_delay() if report.busy else report.retry_in)
    return {"request_id": request_id, "status": report.status}


def _route(redriven: bool) -> dict[str, Any]:
    return {"kwargs": {"redriven": True}, "queue": REDRIVE_QUEUE} if redriven else {}


def enqueue_order(order_ref: str, delay: float | None = None, *, redriven: bool = False) -> None:
    countdown = whole_seconds(delay) if delay else None
    reconcile_order.apply_async(args=[order_ref], countdown=countdown, **_route(redriven))


def enqueue_redriven(order_ref: str, delay: float | None = None) -> None:
    """Backfill and sweeper work: the re-drive queue, a share of the budget while live waits."""
    enqueue_order(order_ref, delay, redriven=True)


def enqueue(
    *, orders: Iterable[str], redeem_requests: Iterable[int], redriven: bool = False
) -> None:
    """Call only after the rows these point at are committed."""
    for order_ref in sorted(orders):
        reconcile_order.apply_async(args=[order_ref], **_route(redriven))
    for request_id in sorted(redeem_requests):
        redeem_points.apply_async(args=[request_id], **_route(redriven))
