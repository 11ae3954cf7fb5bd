"""The intake consumer: a bootstep in the worker's main process that stores events.

It validates, stores (one transaction), enqueues, then acknowledges, and never calls the platform:
slow work here would starve the broker heartbeat. Order systems publish plain JSON, not Celery
task messages, so the events queue is consumed here alone and is not in the worker's ``-Q``
(Celery's task consumer would drop a message it does not recognise).
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from celery import bootsteps
from kombu import Consumer, Exchange, Queue, binding
from kombu.message import Message
from sqlalchemy.exc import SQLAlchemyError

from models.session import engine_for, unit_of_work
from worker import metrics
from worker.app import DEAD_LETTERED, settings_of
from worker.events import EVENT_TYPES
from worker.inbox import store_message
from worker.settings import Settings

log = structlog.get_logger(__name__)

#: Messages in flight on the intake channel; each is one short transaction.
INTAKE_PREFETCH = 32
#: While the database is down each message waits this long before going back to the queue,
#: so the worker neither spins nor blocks its event loop for long.
DB_DOWN_PAUSE_SECONDS = 1.0


def events_queue(settings: Settings) -> Queue:
    exchange = Exchange(settings.events_exchange, type="topic", durable=True)
    return Queue(
        settings.events_queue,
        exchange=exchange,
        bindings=[binding(exchange, routing_key=event_type) for event_type in EVENT_TYPES],
        durable=True,
        queue_arguments=DEAD_LETTERED,
    )


def handle_message(settings: Settings, message: Message) -> str:
    """Store one message; return what happened (for tests and logs)."""
    from worker.tasks import enqueue

    body = message.body
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    routing_key = (message.delivery_info or {}).get("routing_key")
    try:
        with unit_of_work(engine_for(settings.database_url)) as session:
            stored = store_message(session, raw, routing_key=routing_key)
            session.commit()
    except SQLAlchemyError as exc:
        # Not stored, so not acknowledged: the broker keeps it and we try again shortly.
        log.error(
            "intake.store_failed",
            error=type(exc).__name__,
            detail=str(getattr(exc, "orig", None) or exc)[:300],
        )
        time.sleep(DB_DOWN_PAUSE_SECONDS)
        message.requeue()
        metrics.intake_message("requeued")
        return "requeued"
    if stored.status == "rejected":
        log.warning(
            "intake.rejected",
            event_id=stored.event_id,
            reason=stored.reason,
            routing_key=routing_key,
        )
    else:
        log.info(
            "intake.stored",
            event_id=stored.event_id,
            status=stored.status,
            orders=sorted(stored.orders),
        )
    enqueue(stored)
    message.ack()
    metrics.intake_message(stored.status)
    return stored.status


class IntakeConsumer(bootsteps.ConsumerStep):
    """Consumes the events queue; declared exchange, queue and bindings on start."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._settings = settings_of(parent.app)

    def get_consumers(self, channel: Any) -> list[Consumer]:
        settings = self._settings
        return [
            Consumer(
                channel,
                queues=[events_queue(settings)],
                on_message=lambda message: self._safely(settings, message),
                prefetch_count=INTAKE_PREFETCH,
                accept=None,
            )
        ]

    def _safely(self, settings: Settings, message: Message) -> None:
        try:
            handle_message(settings, message)
        except Exception:
            # A bug of ours must not kill the consumer nor loop the message forever: it goes to
            # the dead-letter queue, and the log says why.
            log.exception("intake.crashed")
            if not message.acknowledged:
                message.reject(requeue=False)
                metrics.intake_message("dead_lettered")
