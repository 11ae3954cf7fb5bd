"""Broker topology: every exchange and queue the product uses, and where dead letters go.

Imports nothing of ours, so the app, the intake, the CLI and the tests can all share it.

Every queue a message can die in dead-letters to the fanout exchange ``recon.dlx``, whose one
queue ``recon.dead`` keeps what arrives until an operator looks (``recon dead``). RabbitMQ drops
a dead letter whose exchange does not exist, silently, so whoever consumes declares the whole
topology first (``declare_topology``): the worker at start, and ``recon declare`` for
deployments that pre-create it.

Every queue is a quorum queue (since 0.3): replicated on three nodes of a cluster, so a node
that stops takes no queue with it (a classic queue lives on one node, and while that node is
down its queue cannot be declared, published to or consumed). On one node it costs nothing.

- ``recon.events`` and the task queues carry ``x-delivery-limit``: a message that keeps coming
  back (a consumer that crashes on it, a worker killed while holding it) is dead-lettered by the
  broker instead of looping. The broker counts each return and tells the consumer in the
  ``x-delivery-count`` header; the tasks read it and dead-letter at ``RECON_DELIVERY_LIMIT``
  themselves (with a record that allows a replay), the task queues' own limit is set a little
  higher (``TASK_LIMIT_MARGIN``) as the backstop for a worker that dies before it can.
- Task countdowns (retries, back-off) go through Celery's native delayed delivery: the message
  waits in kombu's ``celery_delayed_*`` quorum queues, not unacked in a worker, and comes back
  through the task exchange, which must therefore be a topic exchange.
- ``recon.dead`` has no dead-letter exchange and no delivery limit of its own, so browsing it
  (get, then give back) can never lose or move what it holds. RabbitMQ 3.x sets no default
  limit; 4.x does (20) unless the queue says otherwise, see ``dead_queue_arguments``.

Release 0.2 declared classic task queues on a direct exchange; ``recon declare --upgrade``
(``worker/ops/upgrade.py``) moves a vhost from that topology to this one without losing a message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from kombu import Connection, Exchange, Queue, binding
from kombu.transport.native_delayed_delivery import (
    bind_queue_to_native_delayed_delivery_exchange,
    declare_native_delayed_delivery_exchanges_and_queues,
)

QUORUM = {"x-queue-type": "quorum"}
#: A topic exchange: native delayed delivery routes a delayed message back to its queue by a
#: routing key that ends with the queue's (``#.recon.reconcile``); a direct exchange cannot.
TASK_EXCHANGE = Exchange("recon", type="topic", durable=True)
TASK_QUEUE = "recon.reconcile"
#: Work re-driven by the sweeper and the backfill: its own queue, so live work never waits behind
#: it at the broker, and the rate limiter knows it may take only a share of the budget.
REDRIVE_QUEUE = "recon.redrive"

DEAD_EXCHANGE = Exchange("recon.dlx", type="fanout", durable=True)
#: Terminal: no dead-letter exchange of its own and no delivery limit, so browsing it (get, then
#: give back) can never lose or move what it holds. Quorum, so it outlives any one node.
DEAD_QUEUE = Queue("recon.dead", DEAD_EXCHANGE, durable=True, queue_arguments=QUORUM)
DEAD_LETTERED = {"x-dead-letter-exchange": DEAD_EXCHANGE.name}
#: The task queues' broker limit is RECON_DELIVERY_LIMIT plus this: the task dead-letters first
#: (and records it, so it may be replayed); the broker only when no task got to run at all.
TASK_LIMIT_MARGIN = 2
#: What RabbitMQ puts on a message that comes back to a quorum queue: the returns so far.
DELIVERY_COUNT_HEADER = "x-delivery-count"
#: The prefix kombu's delayed-delivery queues and exchanges carry (``celery_delayed_27`` ...).
DELAYED_PREFIX = "celery_delayed_"

#: Headers on a message the intake dead-letters itself (the broker's own carry ``x-death``).
REASON_HEADER = "x-recon-reason"
ORIGINAL_EXCHANGE_HEADER = "x-recon-original-exchange"
ORIGINAL_ROUTING_KEY_HEADER = "x-recon-original-routing-key"
#: When it was dead-lettered (ISO 8601, UTC), so `recon dead purge --older-than` can age it.
DEAD_AT_HEADER = "x-recon-dead-at"


_DELAY_PREFIX = re.compile(r"^(?:[01]\.){28}")


def queue_of_routing_key(routing_key: str) -> str:
    """The task queue a task message was routed by: a message that waited in delayed delivery
    comes with its delay in front of the queue's routing key (``0.0.….1.recon.reconcile``)."""
    return _DELAY_PREFIX.sub("", routing_key, count=1)


def task_queue_names() -> list[str]:
    """Every queue the worker's pool consumes (the intake's events queue is not one of them)."""
    return [TASK_QUEUE, REDRIVE_QUEUE]


def task_queue(name: str = TASK_QUEUE, *, delivery_limit: int | None = None) -> Queue:
    """A task queue; ``delivery_limit`` is RECON_DELIVERY_LIMIT (None: the default of 10)."""
    limit = (delivery_limit or DEFAULT_DELIVERY_LIMIT) + TASK_LIMIT_MARGIN
    return Queue(
        name,
        TASK_EXCHANGE,
        routing_key=name,
        durable=True,
        queue_arguments={**DEAD_LETTERED, **QUORUM, "x-delivery-limit": limit},
    )


#: RECON_DELIVERY_LIMIT's default (worker/settings/), for callers without settings at hand.
DEFAULT_DELIVERY_LIMIT = 10


def events_exchange(name: str) -> Exchange:
    return Exchange(name, type="topic", durable=True)


def events_queue(
    *, exchange: str, queue: str, routing_keys: Iterable[str], delivery_limit: int
) -> Queue:
    """The queue order systems' events land in, bound once per event type."""
    source = events_exchange(exchange)
    return Queue(
        queue,
        exchange=source,
        bindings=[binding(source, routing_key=key) for key in routing_keys],
        durable=True,
        queue_arguments={
            **DEAD_LETTERED,
            "x-queue-type": "quorum",
            "x-delivery-limit": delivery_limit,
        },
    )


def declare_topology(
    connection: Connection,
    *,
    events: Queue | None,
    task_queue_names: Sequence[str],
    delivery_limit: int | None = None,
    delayed: bool = True,
) -> None:
    """Declare dead letters first, then the queues that dead-letter into them, then (``delayed``)
    the delayed delivery a countdown needs (idempotent; a worker's start declares it too)."""
    with connection.channel() as channel:
        DEAD_EXCHANGE(channel).declare()
        DEAD_QUEUE(channel).declare()
        if events is not None:
            events(channel).declare()
        queues = [task_queue(name, delivery_limit=delivery_limit) for name in task_queue_names]
        for queue in queues:
            queue(channel).declare()
    # Delayed delivery is RabbitMQ's (exchange-to-exchange bindings, TTLs); the demo's in-memory
    # transport has neither, and Celery does not route countdowns through it there.
    if not delayed or connection.transport.driver_type != "amqp":
        return
    declare_native_delayed_delivery_exchanges_and_queues(connection, "quorum")
    for queue in queues:
        bind_queue_to_native_delayed_delivery_exchange(connection, queue)


#: The largest frame py-amqp offers (its default, and RabbitMQ's): a message's header table must
#: fit in one.
FRAME_MAX = 131_072


def header_recursion_limit(frame_max: int | None = None) -> int:
    """A recursion limit at which py-amqp can decode any header table one frame can hold.

    py-amqp decodes a header table recursively, one Python call per level, and any publisher can
    nest one about ``frame_max / 7`` levels deep (18,000 at 128 KiB), far past Python's default
    limit of 1,000: the RecursionError would escape whatever was reading the connection (the
    worker's event loop: "Unrecoverable error", the worker exits). Python-to-Python calls take no
    C stack (3.11+), so the room costs nothing but the interpreter's counter.
    """
    return (frame_max or FRAME_MAX) // 4 + 2_000
