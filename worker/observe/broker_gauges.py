"""Gauges read from RabbitMQ on each scrape: messages waiting and consumers on each of our queues.

``recon_queue_messages{queue="dead"}`` is how many dead letters wait in ``recon.dead`` for an
operator (the ``ReconDeadLettersGrowing`` alert); ``recon_queue_consumers{queue="events"}`` is how
many intakes are consuming ``recon.events``, and 0 means none is (every worker down, or every
intake paused while the database is away: ``ReconIntakePaused``).

Each scrape opens one short connection and asks with passive declares, which only read (a queue
that does not exist yet is left out rather than created). Like the database gauges, a broker that
cannot answer never fails the scrape: ``recon_broker_gauges_up`` says 0 instead. Labels are the
queue's role, never its configured name, so the vocabulary stays fixed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import structlog

from worker.queues import DEAD_QUEUE, REDRIVE_QUEUE, TASK_QUEUE
from worker.settings import Settings

log = structlog.get_logger(__name__)

#: A scrape never waits longer than this for the broker, per step (connect, each answer).
TIMEOUT_SECONDS = 2.0


def queue_names(settings: Settings) -> dict[str, str]:
    """Role label -> queue name."""
    return {
        "events": settings.events_queue,
        "reconcile": TASK_QUEUE,
        "redrive": REDRIVE_QUEUE,
        "dead": str(DEAD_QUEUE.name),
    }


def read_queues(broker_url: str, names: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Role -> (messages ready, consumers) for every queue that exists."""
    from amqp.exceptions import NotFound
    from kombu import Connection

    options = {"read_timeout": TIMEOUT_SECONDS, "write_timeout": TIMEOUT_SECONDS}
    found: dict[str, tuple[int, int]] = {}
    with Connection(broker_url, connect_timeout=TIMEOUT_SECONDS, transport_options=options) as conn:
        conn.connect()
        channel = conn.channel()
        try:
            for role, name in names.items():
                try:
                    _, messages, consumers = channel.queue_declare(queue=name, passive=True)
                except NotFound:
                    # The broker closed the channel over the missing queue; go on with a new one.
                    channel = conn.channel()
                    continue
                found[role] = (int(messages), int(consumers))
        finally:
            channel.close()
    return found


class BrokerGauges:
    """A collector: our queues' depth and consumers, read from the broker on each scrape."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def describe(self) -> list[Any]:
        return []  # do not reach the broker when registered

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        started = time.perf_counter()
        try:
            queues = read_queues(self._settings.broker_url, queue_names(self._settings))
        except Exception as exc:
            log.warning(
                "metrics.broker_gauges_failed",
                error=type(exc).__name__,
                detail=(str(exc).splitlines() or [""])[0][:200],
            )
            queues = None
        if queues is not None:
            messages = GaugeMetricFamily(
                "recon_queue_messages",
                "Messages ready in each of our queues (dead: recon.dead, waiting for an operator).",
                labels=("queue",),
            )
            consumers = GaugeMetricFamily(
                "recon_queue_consumers",
                "Consumers of each of our queues (events: the intakes consuming recon.events).",
                labels=("queue",),
            )
            for role, (ready, consuming) in sorted(queues.items()):
                messages.add_metric([role], ready)
                consumers.add_metric([role], consuming)
            yield messages
            yield consumers
        up = GaugeMetricFamily(
            "recon_broker_gauges_up", "1 when the broker gauges were read on this scrape, else 0."
        )
        up.add_metric([], 1 if queues is not None else 0)
        yield up
        took = GaugeMetricFamily(
            "recon_broker_gauges_seconds", "Time this scrape spent reading the broker gauges."
        )
        took.add_metric([], time.perf_counter() - started)
        yield took
