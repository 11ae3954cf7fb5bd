"""The intake consumer: a bootstep in the worker's main process that gives every message one fate.

A message is stored (accepted, duplicate, or rejected with a reason) and acknowledged; or, only
when even a rejected row cannot be written for what the message contains, published to the
dead-letter exchange with the reason in a header and acknowledged. When the *database* is the
problem (refused, lost, timed out, shutting down) the message is neither: it is held unacknowledged
while the consumer pauses, and stored when a probe finds the database back. Nothing here sleeps:
the callback runs on the worker's event loop, and blocking it would stall heartbeats, Celery's
control commands and a clean SIGTERM.

It never calls the platform, for the same reason. Order systems publish plain JSON, not Celery
task messages, so the events queue is consumed here alone and is not in the worker's ``-Q``
(Celery's task consumer would drop a message it does not recognise).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import structlog
from celery import Celery, bootsteps
from kombu import Consumer, Queue
from kombu.message import Message
from sqlalchemy import Engine, text

from models.session import database_unavailable, engine_for, unit_of_work
from worker.intake.broker_cap import UNCAPPED, advice, probe_message_cap
from worker.intake.contract import EVENT_TYPES
from worker.intake.store import Stored, store_message, store_rejected
from worker.observe import metrics
from worker.queues import (
    DEAD_AT_HEADER,
    DEAD_EXCHANGE,
    DEAD_QUEUE,
    DEFAULT_DELIVERY_LIMIT,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    REASON_HEADER,
    TASK_QUEUE,
    declare_topology,
    events_queue,
    task_queue,
    task_queue_names,
)
from worker.settings import Settings, settings_of

log = structlog.get_logger(__name__)

#: Messages in flight on the intake channel; each is one short transaction. What they can weigh
#: is bounded only by the broker's max_message_size (checked at start: broker_cap.py).
INTAKE_PREFETCH = 32
#: Every intake statement is bounded, so a locked table cannot hold the event loop.
STATEMENT_TIMEOUT_MS = 10_000
#: First and longest pause between two probes of a database that is down.
PROBE_FIRST_SECONDS = 1.0
PROBE_MAX_SECONDS = 30.0

UNAVAILABLE = "database_unavailable"
DEAD_LETTERED = "dead_lettered"


class DatabaseUnavailable(Exception):
    """The database could not take the message; the message itself may be fine."""


def events_queue_for(settings: Settings) -> Queue:
    return events_queue(
        exchange=settings.events_exchange,
        queue=settings.events_queue,
        routing_keys=EVENT_TYPES,
        delivery_limit=settings.delivery_limit,
    )


def intake_engine(settings: Settings) -> Engine:
    return engine_for(settings.database_url, statement_timeout_ms=STATEMENT_TIMEOUT_MS)


class Enqueuer:
    """Names the work a stored message made, after its commit, without importing the tasks."""

    def __init__(self, app: Celery, *, delivery_limit: int = DEFAULT_DELIVERY_LIMIT) -> None:
        self._app = app
        # Live work: the intake always enqueues on the live queue, declared as the app does.
        self._live = task_queue(TASK_QUEUE, delivery_limit=delivery_limit)

    def __call__(self, stored: Stored) -> None:
        for order_ref in sorted(stored.orders):
            self._app.send_task("recon.reconcile_order", args=[order_ref], queue=self._live)
        for request_id in sorted(stored.redeem_requests):
            self._app.send_task("recon.redeem_points", args=[request_id], queue=self._live)

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


def check_message_cap(connection: Any) -> None:
    """Log whether the broker bounds what the prefetch can hold (worker/intake/broker_cap.py)."""
    try:
        state = probe_message_cap(connection)
    except Exception as exc:
        log.warning("intake.broker_cap_unknown", error=describe(exc))
        return
    problem = advice(state)
    if problem:
        event = "intake.broker_uncapped" if state == UNCAPPED else "intake.broker_cap_too_low"
        log.warning(event, state=state, advice=problem)
    else:
        log.info("intake.broker_cap", state=state)


def body_bytes(message: Message) -> bytes:
    body = message.body
    if isinstance(body, str):  # a transport that decoded it: undo that with the same codec
        try:
            return body.encode(message.content_encoding or "utf-8", "surrogatepass")
        except (LookupError, UnicodeError):
            return body.encode("utf-8", "surrogatepass")
    return bytes(body)


def handle_message(
    message: Message,
    *,
    engine: Engine,
    enqueue: Callable[[Stored], None],
    dead_letter: Callable[[Message, bytes, str], None],
) -> str:
    """Give one message its fate and return it; ``UNAVAILABLE`` leaves it to the caller."""
    raw = body_bytes(message)
    routing_key = (message.delivery_info or {}).get("routing_key")
    try:
        stored = _in_transaction(engine, lambda s: store_message(s, raw, routing_key=routing_key))
    except DatabaseUnavailable:
        return UNAVAILABLE
    except Exception as exc:
        # The database is up but refused this message (or our code choked on it): keep it as a
        # rejected row, which takes only bytes and escaped text.
        reason = f"could not be stored: {describe(exc)}"
        log.warning("intake.unstorable", reason=reason, routing_key=routing_key, size=len(raw))
        try:
            stored = _in_transaction(
                engine,
                lambda s: store_rejected(s, raw, reason=reason, routing_key=routing_key),
            )
        except DatabaseUnavailable:
            return UNAVAILABLE
        except Exception as second:
            reason = f"{reason}; not even as a rejected row: {describe(second)}"
            dead_letter(message, raw, reason)
            log.error("intake.dead_lettered", reason=reason, routing_key=routing_key)
            message.ack()
            metrics.intake_message(DEAD_LETTERED)
            return DEAD_LETTERED
    _log_fate(stored, routing_key, len(raw))
    enqueue(stored)
    message.ack()
    metrics.intake_message(stored.status)
    return stored.status


def _in_transaction(engine: Engine, work: Callable[[Any], Stored]) -> Stored:
    try:
        with unit_of_work(engine) as session:
            stored = work(session)
            session.commit()
            return stored
    except Exception as exc:
        if database_unavailable(exc):
            raise DatabaseUnavailable(describe(exc)) from exc
        raise


def describe(exc: BaseException) -> str:
    """A short, storable description: the error type and its first line, escaped."""
    detail = str(getattr(exc, "orig", None) or exc).splitlines()
    first = detail[0] if detail else ""
    return ascii(f"{type(exc).__name__}: {first}")[1:-1][:300]


def _log_fate(stored: Stored, routing_key: str | None, size: int) -> None:
    if stored.status == "rejected":
        log.warning(
            "intake.rejected",
            event_id=stored.event_id,
            reason=stored.reason,
            routing_key=routing_key,
            size=size,
        )
    else:
        log.info(
            "intake.stored",
            event_id=stored.event_id,
            status=stored.status,
            orders=sorted(stored.orders),
        )


class IntakeConsumer(bootsteps.ConsumerStep):
    """Consumes the events queue; declares the whole topology on start."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._app = parent.app
        self._settings = settings_of(parent.app)
        self._task_queue_names = task_queue_names
        self._enqueue = Enqueuer(parent.app, delivery_limit=self._settings.delivery_limit)
        self._held: list[Message] = []
        self._paused = False
        self._probe_delay = PROBE_FIRST_SECONDS
        self._timer: Any = None

    def start(self, c: Any) -> None:
        # A (re)connected channel starts clean: what we held on the old one went back to the queue.
        self._held.clear()
        self._paused = False
        self._timer = c.timer
        declare_topology(
            c.connection,
            events=events_queue_for(self._settings),
            task_queue_names=self._task_queue_names(),
            delivery_limit=self._settings.delivery_limit,
        )
        check_message_cap(c.connection)
        super().start(c)

    def get_consumers(self, channel: Any) -> list[Consumer]:
        # py-amqp decodes a body that names a content encoding; we keep exactly the bytes that
        # arrived (a rejected message is stored as those bytes).
        if hasattr(channel, "auto_decode"):
            channel.auto_decode = False
        return [
            Consumer(
                channel,
                queues=[events_queue_for(self._settings)],
                on_message=self._on_message,
                prefetch_count=INTAKE_PREFETCH,
                accept=None,
            )
        ]

    def _on_message(self, message: Message) -> None:
        if self._paused or self._handle(message) == UNAVAILABLE:
            self._held.append(message)
            metrics.intake_message("held")
            self._pause()

    def _handle(self, message: Message) -> str:
        try:
            return handle_message(
                message,
                engine=intake_engine(self._settings),
                enqueue=self._enqueue,
                dead_letter=self._enqueue.dead_letter,
            )
        except Exception as exc:
            # A failure after the commit (enqueue, ack): the message stays stored, and the broker
            # gives it back (the duplicate names its work again) within the delivery limit.
            log.exception("intake.after_store_failed", error=describe(exc))
            if not message.acknowledged:
                try:
                    message.requeue()
                    metrics.intake_message("requeued")
                except Exception:
                    log.exception("intake.requeue_failed")
            return "requeued"

    def _pause(self) -> None:
        if self._paused:
            return
        self._paused = True
        for consumer in self.consumers or []:
            consumer.cancel()
        log.error(
            "intake.paused",
            reason="database unavailable; messages stay in the queue until it is back",
            held=len(self._held),
        )
        self._probe_delay = PROBE_FIRST_SECONDS
        self._schedule_probe()

    def _schedule_probe(self) -> None:
        self._timer.call_after(self._probe_delay, self._probe)
        self._probe_delay = min(self._probe_delay * 2, PROBE_MAX_SECONDS)

    def _probe(self) -> None:
        if not self._paused:
            return
        try:
            with intake_engine(self._settings).connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            log.warning("intake.still_paused", error=describe(exc), held=len(self._held))
            metrics.intake_paused_probe()
            self._schedule_probe()
            return
        while self._held:
            if self._handle(self._held[0]) == UNAVAILABLE:
                self._schedule_probe()
                return
            self._held.pop(0)
        self._paused = False
        for consumer in self.consumers or []:
            consumer.consume()
        log.info("intake.resumed")
