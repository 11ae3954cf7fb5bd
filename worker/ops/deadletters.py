"""Dead-lettered messages: look at them, put them back where they came from, or drop them.

Every product queue dead-letters to the fanout exchange ``recon.dlx``, bound to the queue
``recon.dead``. A message there carries either RabbitMQ's ``x-death`` header (the broker
dead-lettered it: rejected, expired, over a length limit or a delivery limit) or the intake's own
``x-recon-*`` headers (the intake dead-lettered it itself and said why).

AMQP has no "peek": reading a message means taking it. Here a message is taken without an ack and
stays unacked on the channel until the walk ends; closing the channel gives every message not
explicitly acked back to the queue, in place. A crash half-way therefore loses nothing.

Replay order for each message: publish a copy to its original exchange and routing key (with
publisher confirms and ``mandatory``, so an unroutable copy is an error, not a silent drop), record
the operator's action, then ack the dead copy. A failure at any step leaves the dead copy where it
was; a copy replayed twice is harmless because the inbox de-duplicates on the event id.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from amqp.exceptions import NotFound
from kombu import Connection, Producer, Queue
from kombu.message import Message

from worker.loyalty.redact import excerpt, redact
from worker.queues import (
    DEAD_AT_HEADER,
    DEAD_QUEUE,
    ORIGINAL_EXCHANGE_HEADER,
    ORIGINAL_ROUTING_KEY_HEADER,
    REASON_HEADER,
)

#: The dead-letter queues the product declares (one today; `recon dead` walks them all).
DEAD_QUEUES: tuple[Queue, ...] = (DEAD_QUEUE,)
#: Headers the broker or the intake added on the way to the dead-letter queue; a replayed copy
#: starts clean, so a second death is counted from one again.
DEATH_HEADERS = frozenset({"x-death", "x-first-death-exchange", "x-first-death-queue",
                           "x-first-death-reason", "x-last-death-exchange", "x-last-death-queue",
                           "x-last-death-reason"})  # fmt: skip
RECON_PREFIX = "x-recon-"
#: Properties carried over to the replayed copy (Celery task messages need theirs).
KEPT_PROPERTIES = ("correlation_id", "reply_to", "priority", "expiration", "type", "app_id")
#: A walk never holds more than this many unacked messages at once.
MAX_WALK = 100_000
EXCERPT_CHARS = 300


class ReplayError(RuntimeError):
    """A copy could not be published where the message came from; the dead copy stays."""


@dataclass(frozen=True)
class DeadMessage:
    """What `recon dead` shows of a message; ``id`` is stable while the message waits."""

    id: str
    queue: str
    reason: str | None
    count: int
    source_queue: str | None
    exchange: str | None
    routing_key: str | None
    dead_at: dt.datetime | None
    content_type: str | None
    content_encoding: str | None
    size: int
    body: bytes = field(repr=False)
    headers: dict[str, Any] = field(repr=False)
    properties: dict[str, Any] = field(repr=False)

    LIST_FIELDS = (
        "id", "dead_at", "reason", "count", "source_queue", "exchange", "routing_key", "size",
        "excerpt",
    )  # fmt: skip

    @property
    def replayable(self) -> bool:
        return self.exchange is not None and self.routing_key is not None

    @property
    def excerpt(self) -> str:
        """The body as safe text: credentials masked, cut short, never raw bytes."""
        return excerpt(self.body, EXCERPT_CHARS)

    def safe_headers(self) -> dict[str, Any]:
        """Headers for people: values of credential-looking keys masked."""
        return redact(_plain(self.headers))

    def as_row(self) -> dict[str, Any]:
        row = {name: getattr(self, name) for name in self.LIST_FIELDS if name != "excerpt"}
        return {**row, "excerpt": self.excerpt}

    def detail(self) -> dict[str, Any]:
        """What the operator log keeps about the message (no body)."""
        return {
            "reason": self.reason,
            "count": self.count,
            "source_queue": self.source_queue,
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "size": self.size,
        }


def message_id(body: bytes, properties: dict[str, Any]) -> str:
    """The message's own ``message_id`` when it has one, else a digest of its body."""
    given = properties.get("message_id")
    if isinstance(given, str) and given:
        return given[:128]
    return hashlib.sha256(body).hexdigest()[:16]


def describe(message: Message, queue: str) -> DeadMessage:
    body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
    headers = dict(message.headers or {})
    properties = dict(message.properties or {})
    properties.pop("application_headers", None)
    deaths = headers.get("x-death") or []
    latest = deaths[0] if deaths and isinstance(deaths[0], dict) else {}
    if REASON_HEADER in headers:
        reason = _text(headers.get(REASON_HEADER))
        exchange = _text(headers.get(ORIGINAL_EXCHANGE_HEADER))
        routing_key = _text(headers.get(ORIGINAL_ROUTING_KEY_HEADER))
        source_queue = _text(headers.get(f"{RECON_PREFIX}original-queue"))
        count = int(latest.get("count", 1)) if latest else 1
        dead_at = _when(headers.get(DEAD_AT_HEADER)) or _when(latest.get("time"))
    else:
        reason = _text(latest.get("reason"))
        exchange = _text(latest.get("exchange"))
        keys = latest.get("routing-keys") or []
        routing_key = _text(keys[0]) if keys else None
        source_queue = _text(latest.get("queue"))
        count = int(latest.get("count", 1)) if latest else 0
        dead_at = _when(latest.get("time"))
    return DeadMessage(
        id=message_id(body, properties),
        queue=queue,
        reason=reason,
        count=count,
        source_queue=source_queue,
        exchange=exchange,
        routing_key=routing_key,
        dead_at=dead_at or _when(properties.get("timestamp")),
        content_type=message.content_type or None,
        content_encoding=message.content_encoding or None,
        size=len(body),
        body=body,
        headers=headers,
        properties=properties,
    )


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
                message = bound.get(no_ack=False, accept=None)
                if message is None:
                    return
                yield message

        yield messages()
    finally:
        # Closing the channel hands every unacked message back to the queue, in place.
        if channel.is_open:
            channel.close()


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
    record: Callable[[DeadMessage], None],
) -> tuple[list[DeadMessage], list[tuple[DeadMessage, str]]]:
    """Republish the chosen messages (all when ``ids`` is None); return (replayed, failed).

    ``record`` is called after the copy is confirmed and before the dead copy is acked; when it
    raises, the dead copy stays (and the copy already published is de-duplicated later).
    """
    replayed: list[DeadMessage] = []
    failed: list[tuple[DeadMessage, str]] = []
    with connection.channel() as out:
        returned: list[Any] = []
        producer = Producer(out, on_return=lambda exc, *_: returned.append(exc))
        for queue in DEAD_QUEUES:
            with _walk(connection, queue) as messages:
                for message in messages:
                    dead = describe(message, queue.name)
                    if ids is not None and dead.id not in ids:
                        continue
                    if not dead.replayable:
                        failed.append((dead, "no original exchange and routing key on record"))
                        continue
                    returned.clear()
                    _publish_copy(producer, dead)
                    if returned:
                        failed.append((dead, f"not routable: {returned[0]}"))
                        continue
                    record(dead)
                    message.ack()
                    replayed.append(dead)
    return replayed, failed


def _publish_copy(producer: Producer, dead: DeadMessage) -> None:
    headers = {
        key: value
        for key, value in dead.headers.items()
        if key not in DEATH_HEADERS and not key.startswith(RECON_PREFIX)
    }
    kept = {name: dead.properties[name] for name in KEPT_PROPERTIES if dead.properties.get(name)}
    if "message_id" in dead.properties:
        kept["message_id"] = dead.properties["message_id"]
    producer.publish(
        dead.body,
        exchange=dead.exchange or "",
        routing_key=dead.routing_key or "",
        headers=headers,
        # Bytes go out as they came: a content type stops kombu from serialising them again.
        content_type=dead.content_type or "application/octet-stream",
        content_encoding=dead.content_encoding or "binary",
        delivery_mode=2,
        mandatory=True,
        retry=False,
        **kept,
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


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _when(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, str):
        try:
            return _when(dt.datetime.fromisoformat(value))
        except ValueError:
            return None
    return None


def _plain(value: Any) -> Any:
    """Header values as JSON-ready data (AMQP tables hold bytes and datetimes)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value
