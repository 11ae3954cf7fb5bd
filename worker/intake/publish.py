"""What the intake publishes: the tasks a stored batch made, and a dead letter now and then.

The tasks of a whole batch go out on one channel in confirm mode and the intake waits once for
the broker to confirm them all, rather than once per task: the broker's confirms come back as one
``multiple`` ack for everything it has taken. Nothing is acknowledged to the order systems before
that wait returns, so a task the broker did not take is named again when the message comes back
(the inbox then says duplicate and names the work again; tasks are idempotent).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from typing import Any

import structlog
from celery import Celery
from kombu import Producer
from kombu.message import Message

from worker.intake.store import Stored
from worker.queues import (
    DEAD_AT_HEADER,
    DEAD_EXCHANGE,
    DEAD_QUEUE,
    DEFAULT_DELIVERY_LIMIT,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    REASON_HEADER,
    TASK_QUEUE,
    task_queue,
)

log = structlog.get_logger(__name__)

#: Longest wait for the broker to confirm one batch's tasks.
CONFIRM_TIMEOUT_SECONDS = 10.0


class Unconfirmed(Exception):
    """The broker refused (nacked) or did not confirm a task in time."""


def tasks_of(batch: Iterable[Stored], *, orders_per_task: int = 1) -> list[tuple[str, Any]]:
    """The (task name, argument) pairs a batch made, in the order its events came, each once: an
    order that several events of the batch made ready is one task (it reconciles them all), and
    the orders are handed out ``orders_per_task`` to a ``recon.reconcile_orders`` task (one
    order alone: ``recon.reconcile_order``)."""
    orders: dict[str, None] = {}
    requests: dict[int, None] = {}
    for stored in batch:
        orders |= dict.fromkeys(sorted(stored.orders))
        requests |= dict.fromkeys(sorted(stored.redeem_requests))
    refs, size = list(orders), max(1, orders_per_task)
    tasks: list[tuple[str, Any]] = []
    for start in range(0, len(refs), size):
        chunk = refs[start : start + size]
        if len(chunk) == 1:
            tasks.append(("recon.reconcile_order", chunk[0]))
        else:
            tasks.append(("recon.reconcile_orders", chunk))
    tasks += [("recon.redeem_points", request_id) for request_id in requests]
    return tasks


class Enqueuer:
    """Names the work stored messages made, after their commit, without importing the tasks."""

    def __init__(
        self,
        app: Celery,
        *,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
        orders_per_task: int = 1,
    ) -> None:
        self._app = app
        self._orders_per_task = orders_per_task
        # Live work: the intake always enqueues on the live queue, declared as the app does.
        self._live = task_queue(TASK_QUEUE, delivery_limit=delivery_limit)
        self._connection: Any = None
        self._channel: Any = None
        self._unconfirmed: set[int] = set()
        self._next_tag = 1
        self._nacked = False
        self._confirms = False

    def __call__(self, stored: Stored) -> None:
        self.publish([stored])

    def publish(self, batch: Iterable[Stored]) -> None:
        """Publish every task ``batch`` made (live work: the live queue); one confirm wait."""
        tasks = tasks_of(batch, orders_per_task=self._orders_per_task)
        if not tasks:
            return
        try:
            self._publish_confirmed(tasks)
        except Exception as exc:
            # A connection that went stale while idle: one more try on a fresh one (a task the
            # broker did take is then sent twice, which is harmless).
            log.warning("intake.publish_retry", error=type(exc).__name__, tasks=len(tasks))
            self.close()
            self._publish_confirmed(tasks)

    def _publish_confirmed(self, tasks: list[tuple[str, Any]]) -> None:
        channel = self._confirming_channel()
        producer = Producer(channel)
        for name, argument in tasks:
            self._app.send_task(
                name, args=[argument], queue=self._live, producer=producer, retry=False
            )
        if self._confirms:
            self._wait_for_confirms()

    def _confirming_channel(self) -> Any:
        """A channel of our own, in confirm mode where the transport has confirms (not the
        demo's in-memory broker, whose publishes cannot be lost on the way anyway)."""
        if self._channel is not None:
            return self._channel
        # The app's connections confirm every publish one by one (confirm_publish); this one
        # is put in confirm mode by hand, so that the waits can be ours.
        connection = self._app.connection_for_write(transport_options={"confirm_publish": False})
        connection.ensure_connection(max_retries=3)
        if connection.transport.driver_type != "amqp":
            self._connection, self._confirms = connection, False
            self._channel = connection.channel()
            return self._channel
        channel = connection.channel()
        channel.confirm_select()
        # Every publish on the channel takes the next delivery tag, Celery's own task-sent
        # events included: count them where they all pass (py-amqp swaps this attribute per
        # instance itself, for its confirm_publish).
        publish = channel.basic_publish

        def counted(*args: Any, **kwargs: Any) -> Any:
            self._unconfirmed.add(self._next_tag)
            self._next_tag += 1
            return publish(*args, **kwargs)

        channel.basic_publish = counted
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        self._connection, self._channel, self._confirms = connection, channel, True
        self._unconfirmed, self._next_tag, self._nacked = set(), 1, False
        return channel

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._unconfirmed = {tag for tag in self._unconfirmed if tag > delivery_tag}
        else:
            self._unconfirmed.discard(delivery_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._nacked = True
        self._on_ack(delivery_tag, multiple)

    def _wait_for_confirms(self) -> None:
        deadline = time.monotonic() + CONFIRM_TIMEOUT_SECONDS
        while self._unconfirmed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Unconfirmed(f"{len(self._unconfirmed)} task(s) not confirmed in time")
            try:
                self._connection.drain_events(timeout=remaining)
            except TimeoutError:
                continue
        if self._nacked:
            self._nacked = False
            raise Unconfirmed("the broker refused a task (nack)")

    def close(self) -> None:
        """Drop our connection (after a failure, or at the consumer's stop)."""
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None:
            try:
                connection.release()
            except Exception:
                log.debug("intake.publisher_close_failed", exc_info=True)

    def dead_letter(self, message: Message, body: bytes, reason: str) -> None:
        """Publish a copy to the dead-letter exchange with the reason; confirmed before we ack."""
        info = message.delivery_info or {}
        headers = {
            REASON_HEADER: reason[:1000],
            DEAD_AT_HEADER: dt.datetime.now(dt.UTC).isoformat(),
            ORIGINAL_EXCHANGE_HEADER: str(info.get("exchange") or ""),
            ORIGINAL_ROUTING_KEY_HEADER: str(info.get("routing_key") or ""),
        }
        with self._app.producer_pool.acquire(block=True, timeout=10) as producer:
            producer.publish(
                body,
                exchange=DEAD_EXCHANGE,
                routing_key=headers[ORIGINAL_ROUTING_KEY_HEADER],
                headers=headers,
                content_type=message.content_type or "application/octet-stream",
                content_encoding=message.content_encoding or "binary",
                delivery_mode=2,
                declare=[DEAD_QUEUE],
                retry=True,
                retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
            )
