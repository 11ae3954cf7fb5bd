"""Dead-lettered messages: look at them, send them back where the product allows, or drop them.

Every product queue dead-letters to the fanout exchange ``recon.dlx``, bound to the queue
``recon.dead``. A message there carries either RabbitMQ's ``x-death`` header (the broker
dead-lettered it: rejected, expired, over a length limit or a delivery limit) or the intake's own
``x-recon-*`` headers (the intake dead-lettered it itself and said why).

AMQP has no "peek": reading a message means taking it. Here a message is taken without an ack and
stays unacked on the channel until the walk ends; closing the channel gives every message not
explicitly acked back to the queue, in place. A crash half-way therefore loses nothing.

Where a copy may go is decided by ``replay_rules`` from facts no publisher controls; messages are
named by ids the product computes (``dead_message``). Replay order for each message: publish a
fresh copy (with publisher confirms and ``mandatory``, so an unroutable copy is an error, not a
silent drop), record the operator's action, then ack the dead copy. A failure at any step leaves
the dead copy where it was; an event replayed twice is harmless because the inbox de-duplicates
on the event id, and a task is replayed once (its record is used up).
A refusal is recorded too, and the message stays.
"""

from __future__ import annotations

import datetime as dt
import functools
import sys
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from amqp.exceptions import NotFound
from celery import Celery
from kombu import Connection, Producer, Queue
from kombu.message import Message

from worker.ops.dead_message import DeadMessage, describe
from worker.ops.replay_rules import (
    EventReplay,
    Refusal,
    TaskReplay,
    Topology,
    plan,
    unrecorded,
)
from worker.queues import DEAD_QUEUE, header_recursion_limit

#: The dead-letter queues the product declares (one today; `recon dead` walks them all).
DEAD_QUEUES: tuple[Queue, ...] = (DEAD_QUEUE,)
#: A walk never holds more than this many unacked messages at once.
MAX_WALK = 100_000


class DeadTaskRecord(Protocol):
    """The worker's record of a task message it dead-lettered (``models.dead_tasks.DeadTask``)."""

    id: int
    queue: str


@dataclass(frozen=True)
class Replayed:
    message: DeadMessage
    exchange: str
    routing_key: str
    #: For a task: the call to send again, and the worker's record of its dead-lettering.
    task: TaskReplay | None = None
    record: DeadTaskRecord | None = None


@functools.cache
def _task_messages() -> Celery:
    """A Celery app that only builds task messages (it never connects): replays are made afresh."""
    return Celery("recon-replay", set_as_current=False)


@contextmanager
def _walk(connection: Connection, queue: Queue) -> Iterator[Iterator[Message]]:
    """The messages of ``queue`` in order, taken unacked; those not acked go back at the end.

    The queue is only looked up (passive), never created: reading must not change the broker.
    A queue that does not exist yet holds nothing.
    """
    channel = connection.channel()
    try:
        try:
            _, count, _ = channel.queue_declare(queue.name, passive=True)
        except NotFound:
            yield iter(())
            return
        bound = queue(channel)

        def messages() -> Iterator[Message]:
            # Only what was there when the walk started: a message dead-lettered meanwhile
            # (or a replayed copy dying again) waits for the next walk, so the walk ends.
            for _ in range(min(count, MAX_WALK)):
                with _room_for_nested_headers(connection):
                    message = bound.get(no_ack=False, accept=None)
                if message is None:
                    return
                yield message

        yield messages()
    finally:
        # Closing the channel hands every unacked message back to the queue, in place.
        if channel.is_open:
            channel.close()


@contextmanager
def _room_for_nested_headers(connection: Connection) -> Iterator[None]:
    """Let py-amqp decode headers nested as deep as one frame can hold
    (``queues.header_recursion_limit``), for the decoding only: everything after it
    (``dead_message``, ``masking``) is bounded by depth itself."""
    frame_max = getattr(connection.connection, "frame_max", None)
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(max(previous, header_recursion_limit(frame_max)))
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)


def waiting(connection: Connection, *, queues: Collection[Queue] = DEAD_QUEUES) -> int:
    """How many messages wait in the dead-letter queues (a passive look-up)."""
    total = 0
    for queue in queues:
        channel = connection.channel()
        try:
            total += channel.queue_declare(queue.name, passive=True)[1]
        except NotFound:
            pass  # no such queue yet: nothing waits in it
        finally:
            if channel.is_open:
                channel.close()
    return total


def peek(
    connection: Connection, *, limit: int, queues: Collection[Queue] = DEAD_QUEUES
) -> list[DeadMessage]:
    """Up to ``limit`` messages waiting in the dead-letter queues, oldest first; none taken."""
    found: list[DeadMessage] = []
    for queue in queues:
        with _walk(connection, queue) as messages:
            for message in messages:
                found.append(describe(message, queue.name))
                if len(found) >= limit:
                    return found
    return found


def find(connection: Connection, wanted: str) -> DeadMessage | None:
    """The first dead message whose id is ``wanted``, left where it is."""
    for queue in DEAD_QUEUES:
        with _walk(connection, queue) as messages:
            for message in messages:
                dead = describe(message, queue.name)
                if dead.id == wanted:
                    return dead
    return None


def replay(
    connection: Connection,
    *,
    ids: Collection[str] | None,
    topology: Topology,
    lookup: Callable[[str], DeadTaskRecord | None],
    record: Callable[[Replayed], None],
    refuse: Callable[[DeadMessage, str], None],
) -> tuple[list[Replayed], list[tuple[DeadMessage, str]]]:
    """Replay the chosen messages (all when ``ids`` is None, else one message per id) where
    ``replay_rules`` allows; return (replayed, not replayed with why).

    ``lookup`` finds the worker's record of a dead task by fingerprint. ``record`` is called after
    the copy is confirmed and before the dead copy is acked; when it raises, the dead copy stays
    (an event copy already published is de-duplicated later). ``refuse`` is called for each
    message the rules refuse, which stays where it is.
    """
    wanted = None if ids is None else set(ids)
    replayed: list[Replayed] = []
    failed: list[tuple[DeadMessage, str]] = []
    with connection.channel() as out:
        returned: list[Any] = []
        producer = Producer(out, on_return=lambda exc, *_: returned.append(exc))
        for queue in DEAD_QUEUES:
            with _walk(connection, queue) as messages:
                for message in messages:
                    dead = describe(message, queue.name)
                    if wanted is not None:
                        if dead.id not in wanted:
                            continue
                        wanted.discard(dead.id)  # an id names one message, even if two match
                    done = _route(dead, topology, lookup)
                    if isinstance(done, Refusal):
                        refuse(dead, done.why)
                        failed.append((dead, done.why))
                        continue
                    returned.clear()
                    _publish_copy(producer, dead, done)
                    if returned:
                        failed.append((dead, f"not routable: {returned[0]}"))
                        continue
                    record(done)
                    message.ack()
                    replayed.append(done)
    return replayed, failed


def _route(
    dead: DeadMessage, topology: Topology, lookup: Callable[[str], DeadTaskRecord | None]
) -> Replayed | Refusal:
    decided = plan(dead, topology)
    if isinstance(decided, Refusal):
        return decided
    if isinstance(decided, EventReplay):
        return Replayed(dead, decided.exchange, decided.routing_key)
    found = lookup(decided.fingerprint)
    if found is None or found.queue not in topology.task_queues:
        return unrecorded(decided)
    return Replayed(dead, topology.task_exchange, found.queue, task=decided, record=found)


def _publish_copy(producer: Producer, dead: DeadMessage, route: Replayed) -> None:
    """A fresh message: an event's body and content type alone, or a task call built anew."""
    options: dict[str, Any] = dict(
        exchange=route.exchange,
        routing_key=route.routing_key,
        delivery_mode=2,
        mandatory=True,
        retry=False,
    )
    task = route.task
    if task is not None:
        # Celery's own message builder; a new id, so the copy's returns are counted afresh.
        message = _task_messages().amqp.as_task_v2(
            str(uuid.uuid4()), task.task_name, args=task.args, kwargs=task.kwargs,
            argsrepr=repr(task.args)[:1024], kwargsrepr=repr(task.kwargs)[:1024],
            origin="recon dead replay", ignore_result=True,
        )  # fmt: skip
        producer.publish(
            message.body, serializer="json", headers=message.headers, **message.properties,
            **options,
        )  # fmt: skip
        return
    producer.publish(
        dead.body,
        # Bytes go out as they came: a content type stops kombu from serialising them again.
        content_type=dead.raw_content_type or "application/octet-stream",
        content_encoding=dead.raw_content_encoding or "binary",
        **options,
    )


def purge(
    connection: Connection,
    *,
    older_than: dt.timedelta | None,
    record: Callable[[DeadMessage], None],
    now: dt.datetime | None = None,
) -> list[DeadMessage]:
    """Drop dead messages (those dead for longer than ``older_than``, or all); return them."""
    cutoff = (now or dt.datetime.now(dt.UTC)) - older_than if older_than is not None else None
    dropped: list[DeadMessage] = []
    for queue in DEAD_QUEUES:
        with _walk(connection, queue) as messages:
            for message in messages:
                dead = describe(message, queue.name)
                # A message of unknown age is kept: purging by age must not guess.
                if cutoff is not None and (dead.dead_at is None or dead.dead_at >= cutoff):
                    continue
                record(dead)
                message.ack()
                dropped.append(dead)
    return dropped
