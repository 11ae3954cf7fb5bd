"""The intake consumer: a bootstep in the worker's main process that feeds messages to their fates
a batch at a time (``fates.py``).

Messages collect in a batch until it holds ``RECON_INTAKE_BATCH_SIZE`` of them (or
``MAX_BATCH_BYTES``), or until ``RECON_INTAKE_FLUSH_MS`` after the first one arrived, whichever
comes first: a backlog is stored hundreds to a transaction, a lone message waits only a few tens
of milliseconds. When the *database* is the problem the batch is held unacknowledged while the
consumer pauses, and stored when a probe finds the database back. Nothing here sleeps: the
callbacks run on the worker's event loop, and blocking it would stall heartbeats, Celery's
control commands and a clean SIGTERM.

It never calls the platform, for the same reason. Order systems publish plain JSON, not Celery
task messages, so the events queue is consumed here alone and is not in the worker's ``-Q``
(Celery's task consumer would drop a message it does not recognise).
"""

from __future__ import annotations

from typing import Any

import structlog
from celery import bootsteps
from kombu import Consumer, Queue
from kombu.message import Message
from sqlalchemy import Engine, text

from models.session import engine_for
from worker.intake.broker_cap import UNCAPPED, advice, probe_message_cap
from worker.intake.contract import EVENT_TYPES
from worker.intake.fates import UNAVAILABLE, describe, handle_batch, handle_message
from worker.intake.publish import Enqueuer
from worker.observe import metrics
from worker.queues import declare_topology, events_queue, task_queue_names
from worker.settings import Settings, settings_of

__all__ = [
    "UNAVAILABLE",
    "Enqueuer",
    "IntakeConsumer",
    "check_message_cap",
    "events_queue_for",
    "handle_message",
    "intake_engine",
]

log = structlog.get_logger(__name__)

#: A batch is stored once it holds this many bytes, whatever its count: what a worker holds in
#: memory is this plus one message (its deliveries past the batch wait in the socket).
MAX_BATCH_BYTES = 8 * 1024 * 1024
#: Every intake statement is bounded, so a locked table cannot hold the event loop.
STATEMENT_TIMEOUT_MS = 10_000
#: First and longest pause between two probes of a database that is down.
PROBE_FIRST_SECONDS = 1.0
PROBE_MAX_SECONDS = 30.0


def events_queue_for(settings: Settings) -> Queue:
    return events_queue(
        exchange=settings.events_exchange,
        queue=settings.events_queue,
        routing_keys=EVENT_TYPES,
        delivery_limit=settings.delivery_limit,
    )


def intake_engine(settings: Settings) -> Engine:
    return engine_for(settings.database_url, statement_timeout_ms=STATEMENT_TIMEOUT_MS)


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


class IntakeConsumer(bootsteps.ConsumerStep):
    """Consumes the events queue in batches; declares the whole topology on start."""

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._app = parent.app
        self._settings = settings_of(parent.app)
        self._task_queue_names = task_queue_names
        self._enqueue = Enqueuer(
            parent.app,
            delivery_limit=self._settings.delivery_limit,
            orders_per_task=self._settings.orders_per_task,
        )
        self._batch: list[Message] = []
        self._batch_bytes = 0
        self._flush_entry: Any = None
        self._flush_now = False
        self._held: list[Message] = []
        self._paused = False
        self._probe_delay = PROBE_FIRST_SECONDS
        self._timer: Any = None

    def start(self, c: Any) -> None:
        # A (re)connected channel starts clean: what we held on the old one went back to the queue.
        self._cancel_flush()
        self._batch, self._batch_bytes = [], 0
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

    def shutdown(self, c: Any) -> None:
        self._cancel_flush()
        self._enqueue.close()
        super().shutdown(c)

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
                # Twice a batch: the next batch is on its way while this one is stored.
                prefetch_count=2 * self._settings.intake_batch_size,
                accept=None,
            )
        ]

    def _on_message(self, message: Message) -> None:
        if self._paused:
            self._hold([message])
            return
        self._batch.append(message)
        self._batch_bytes += len(message.body or b"")
        if self._batch_bytes >= MAX_BATCH_BYTES:
            self._flush()  # now: what the worker holds stays bounded
        elif len(self._batch) >= self._settings.intake_batch_size:
            # Full: stored on the loop's next turn, not inside this callback, which may run
            # within another wait on the connection (a worker starting on a backlog receives
            # deliveries while it waits for the task queue's consume-ok).
            self._schedule_flush(0.0)
        else:
            self._schedule_flush(self._settings.intake_flush_ms / 1000)

    def _schedule_flush(self, delay: float) -> None:
        if self._flush_entry is not None and (delay > 0 or self._flush_now):
            return
        self._cancel_flush()
        self._flush_now = delay == 0
        self._flush_entry = self._timer.call_after(delay, self._flush)

    def _flush(self) -> None:
        """Store what the batch holds now, a batch size at a time; hold what the database
        could not take (and everything after it)."""
        self._cancel_flush()
        pending, self._batch, self._batch_bytes = self._batch, [], 0
        size = self._settings.intake_batch_size
        for start in range(0, len(pending), size):
            batch = pending[start : start + size]
            done = self._settle(batch)
            if done < len(batch):
                self._hold(pending[start + done :])
                self._pause()
                return

    def _cancel_flush(self) -> None:
        if self._flush_entry is not None:
            self._flush_entry.cancel()
            self._flush_entry = None

    def _settle(self, batch: list[Message]) -> int:
        return handle_batch(
            batch,
            engine=intake_engine(self._settings),
            publish=self._enqueue.publish,
            dead_letter=self._enqueue.dead_letter,
        )

    def _hold(self, messages: list[Message]) -> None:
        self._held += messages
        for _ in messages:
            metrics.intake_message("held")

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
        # The held messages are the oldest deliveries: they get their fates before any new one.
        while self._held:
            batch = self._held[: self._settings.intake_batch_size]
            done = self._settle(batch)
            del self._held[:done]
            if done < len(batch):
                self._schedule_probe()
                return
        self._paused = False
        for consumer in self.consumers or []:
            consumer.consume()
        log.info("intake.resumed")
