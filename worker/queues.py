"""Broker topology: every exchange and queue the product uses, and where dead letters go.

Imports nothing of ours, so the app, the intake, the CLI and the tests can all share it.

Every queue a message can die in dead-letters to the fanout exchange ``recon.dlx``, whose one
queue ``recon.dead`` keeps what arrives until an operator looks (``recon dead``). RabbitMQ drops
a dead letter whose exchange does not exist, silently, so whoever consumes declares the whole
topology first (``declare_topology``): the worker at start, and ``recon declare`` for
deployments that pre-create it.

Delivery limits: the events queue is a quorum queue with ``x-delivery-limit``, so a message that
keeps coming back (a consumer that crashes on it, a worker killed while holding it) is
dead-lettered by the broker after that many returns instead of looping. Task queues stay classic:
Celery's countdown retries rely on them, and their limit is counted by the tasks themselves
(``worker/reconcile/deliveries.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from kombu import Connection, Exchange, Queue, binding

TASK_EXCHANGE = Exchange("recon", type="direct", durable=True)
TASK_QUEUE = "recon.reconcile"
#: Work re-driven by the sweeper and the backfill: its own queue, so live work never waits behind
#: it at the broker, and the rate limiter knows it may take only a share of the budget.
REDRIVE_QUEUE = "recon.redrive"

DEAD_EXCHANGE = Exchange("recon.dlx", type="fanout", durable=True)
#: Terminal and classic: no dead-letter exchange of its own and no delivery limit, so browsing it
#: (get, then requeue) can never lose or move what it holds.
DEAD_QUEUE = Queue("recon.dead", DEAD_EXCHANGE, durable=True)
DEAD_LETTERED = {"x-dead-letter-exchange": DEAD_EXCHANGE.name}

#: Headers on a message the intake dead-letters itself (the broker's own carry ``x-death``).
REASON_HEADER = "x-recon-reason"
ORIGINAL_EXCHANGE_HEADER = "x-recon-original-exchange"
ORIGINAL_ROUTING_KEY_HEADER = "x-recon-original-routing-key"
#: When it was dead-lettered (ISO 8601, UTC), so `recon dead purge --older-than` can age it.
DEAD_AT_HEADER = "x-recon-dead-at"


def task_queue_names() -> list[str]:
    """Every queue the worker's pool consumes (the intake's events queue is not one of them)."""
    return [TASK_QUEUE, REDRIVE_QUEUE]


def task_queue(name: str = TASK_QUEUE) -> Queue:
    return Queue(name, TASK_EXCHANGE, routing_key=name, durable=True, queue_arguments=DEAD_LETTERED)


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
    connection: Connection, *, events: Queue | None, task_queue_names: Sequence[str]
) -> None:
    """Declare dead letters first, then the queues that dead-letter into them (idempotent)."""
    with connection.channel() as channel:
        DEAD_EXCHANGE(channel).declare()
        DEAD_QUEUE(channel).declare()
        if events is not None:
            events(channel).declare()
        for name in task_queue_names:
            task_queue(name)(channel).declare()


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
