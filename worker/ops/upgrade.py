"""`recon declare --upgrade`: move a vhost from release 0.2's broker topology to this one.

Release 0.2 declared the task queues (``recon.reconcile``, ``recon.redrive``) and ``recon.dead``
as classic queues, on a direct task exchange ``recon``. RabbitMQ changes neither a queue's type
nor an exchange's in place: the queue must be deleted and declared again, and deleting a queue
deletes what it holds. So, per queue that is not what ``worker/queues.py`` declares now:

1. its messages move to a holding queue ``<queue>.upgrade`` (quorum) through a fanout exchange
   of the same name, which keeps each message's routing key, properties and headers (``x-death``
   included: the replay rules read it);
2. the old queue is deleted, only once empty;

then the old task exchange is deleted, the whole topology declared (``declare_topology``), and
each holding queue's messages move into the new queue, after which the holding queue and its
exchange are deleted. Every message moves with a publisher confirm and is acked where it was only
after the broker confirmed its copy, so an interruption leaves each message in one of the two
queues (at worst in both: a task is idempotent, a dead letter is shown twice); running the
command again finishes the move.

It refuses while anything consumes an old queue: stop every worker first (0.2 workers would
declare the old queues again). Order systems may go on publishing: the events queue is a quorum
queue since 0.2 and is left as it is.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import amqp
from amqp.exceptions import NotFound, PreconditionFailed
from kombu import Connection, Queue

from worker.queues import DEAD_QUEUE, TASK_EXCHANGE, declare_topology, task_queue

HOLD_SUFFIX = ".upgrade"


class UpgradeRefused(Exception):
    """The vhost cannot be upgraded now; the message says what to do first."""


@dataclass(frozen=True)
class Moved:
    queue: str
    messages: int


def upgrade_topology(
    connection: Connection,
    *,
    events: Queue | None,
    task_queue_names: Sequence[str],
    delivery_limit: int,
) -> list[Moved]:
    """Bring the vhost to the current topology, keeping every message; what moved, per queue."""
    wanted = _wanted(task_queue_names, delivery_limit)
    stale = [queue for queue in wanted if _state(connection, queue) == "other"]
    _refuse_if_consumed(connection, stale)
    for queue in stale:
        _hold(connection, queue.name)
        _run(connection, functools.partial(_delete_if_empty, name=queue.name))
    if not _declares(connection, lambda ch: TASK_EXCHANGE(ch).declare()):
        _run(connection, lambda ch: ch.exchange_delete(TASK_EXCHANGE.name))
    declare_topology(
        connection,
        events=events,
        task_queue_names=task_queue_names,
        delivery_limit=delivery_limit,
    )
    return [Moved(queue.name, _release(connection, queue.name)) for queue in wanted]


def stale_queues(
    connection: Connection, *, task_queue_names: Sequence[str], delivery_limit: int
) -> list[str]:
    """The product's queues that exist declared otherwise than now (0.2's classic queues, or
    another delivery limit): a worker could not declare them, the upgrade would move them."""
    wanted = _wanted(task_queue_names, delivery_limit)
    return [queue.name for queue in wanted if _state(connection, queue) == "other"]


def _wanted(task_queue_names: Sequence[str], delivery_limit: int) -> list[Queue]:
    return [*(task_queue(name, delivery_limit=delivery_limit) for name in task_queue_names),
            DEAD_QUEUE]  # fmt: skip


def _delete_if_empty(channel: amqp.Channel, *, name: str) -> None:
    channel.queue_delete(name, if_empty=True)


def _state(connection: Connection, queue: Queue) -> str:
    """``absent``, ``current`` (declared as now), or ``other`` (another type or arguments)."""
    if not _declares(connection, lambda ch: ch.queue_declare(queue.name, passive=True)):
        return "absent"
    return "current" if _declares(connection, lambda ch: queue(ch).declare()) else "other"


def _declares(connection: Connection, declare: Callable[[amqp.Channel], object]) -> bool:
    """Whether ``declare`` succeeds; a refusal closes the channel, so each gets its own."""
    try:
        _run(connection, declare)
    except (NotFound, PreconditionFailed):
        return False
    return True


def _run(connection: Connection, work: Callable[[amqp.Channel], object]) -> None:
    channel = connection.channel()
    try:
        work(channel)
    finally:
        if channel.is_open:
            channel.close()


def _refuse_if_consumed(connection: Connection, queues: Sequence[Queue]) -> None:
    for queue in queues:
        channel = connection.channel()
        try:
            _, _, consumers = channel.queue_declare(queue.name, passive=True)
        finally:
            if channel.is_open:
                channel.close()
        if consumers:
            raise UpgradeRefused(
                f"{queue.name} has {consumers} consumer(s): stop every worker (and anything else "
                "reading it) before the upgrade, then run it again"
            )


def _hold(connection: Connection, name: str) -> None:
    """Move every message of the old queue ``name`` to its holding queue."""
    hold = name + HOLD_SUFFIX

    def prepare(channel: amqp.Channel) -> None:
        channel.exchange_declare(hold, "fanout", durable=True, auto_delete=False)
        channel.queue_declare(hold, durable=True, auto_delete=False, arguments=_quorum())
        channel.queue_bind(hold, hold)

    _run(connection, prepare)
    _move(connection, source=name, exchange=hold)


def _release(connection: Connection, name: str) -> int:
    """Move the holding queue's messages into the (new) queue ``name``; remove the holding."""
    hold = name + HOLD_SUFFIX
    if not _declares(connection, lambda ch: ch.exchange_declare(hold, "fanout", passive=True)):
        return 0

    def reroute(channel: amqp.Channel) -> None:
        channel.queue_unbind(hold, hold)
        channel.queue_bind(name, hold)

    _run(connection, reroute)
    moved = _move(connection, source=hold, exchange=hold)

    def remove(channel: amqp.Channel) -> None:
        channel.queue_unbind(name, hold)
        channel.exchange_delete(hold)
        # Quorum queues take no if-empty delete: nothing routes here any more, so a count of 0
        # stays 0.
        if channel.queue_declare(hold, passive=True)[1] == 0:
            channel.queue_delete(hold)

    _run(connection, remove)
    return moved


def _move(connection: Connection, *, source: str, exchange: str) -> int:
    """Each message of ``source`` to ``exchange`` with its own routing key and properties;
    acked in ``source`` only once the broker confirmed the copy."""
    moved = 0
    channel = connection.channel()
    channel.auto_decode = False  # the body moves as the bytes it is, whatever it claims to be
    try:
        channel.confirm_select()
        while True:
            message = channel.basic_get(source, no_ack=False)
            if message is None:
                return moved
            copy = amqp.Message(message.body, **message.properties)
            channel.basic_publish_confirm(
                copy, exchange=exchange, routing_key=message.delivery_info["routing_key"]
            )
            channel.basic_ack(message.delivery_info["delivery_tag"])
            moved += 1
    finally:
        if channel.is_open:
            channel.close()


def _quorum() -> dict[str, str]:
    return {"x-queue-type": "quorum"}
