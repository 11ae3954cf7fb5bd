"""Publishing events the way an order system does: plain JSON on the topic exchange."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from amqp.exceptions import MessageNacked
from kombu import Connection, Exchange, Producer

#: Routing key for a line that has no usable ``type`` (the intake will reject it, on record).
FALLBACK_ROUTING_KEY = "coupon.redeemed"


def routing_key_for(body: bytes, fallback: str = FALLBACK_ROUTING_KEY) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return fallback
    kind = data.get("type") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) and kind else fallback


#: Confirms the broker may owe before publishing stops to wait for them.
CONFIRM_WINDOW = 1_000
#: Longest wait for the broker's confirms of what was published.
CONFIRM_TIMEOUT_SECONDS = 60.0


class NotConfirmed(Exception):
    """The broker refused (nacked) published messages, or did not confirm them in time."""


class _Confirms:
    """Publisher confirms on one channel, settled in batches: RabbitMQ promises nothing for a
    message it has not confirmed, and a publisher that closed without waiting for them lost
    the last messages of a large publication (the benchmark's backlog, bench/README.md)."""

    def __init__(self, channel: Any) -> None:
        self.published = 0
        self.pending: set[int] = set()  # delivery tags not yet confirmed
        self.nacked = 0
        channel.confirm_select()
        channel.events["basic_ack"].add(self._ack)
        channel.events["basic_nack"].add(self._nack)

    @property
    def settled(self) -> int:
        return self.published - len(self.pending)

    def sent(self) -> None:
        self.published += 1
        self.pending.add(self.published)

    def _settle(self, delivery_tag: int, multiple: bool) -> int:
        done = {t for t in self.pending if t <= delivery_tag} if multiple else {delivery_tag}
        done &= self.pending  # a tag settled twice counts once
        self.pending -= done
        return len(done)

    def _ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple)

    def _nack(self, delivery_tag: int, multiple: bool) -> None:
        self.nacked += self._settle(delivery_tag, multiple)

    def wait(self, connection: Connection, published: int, *, last: bool = False) -> None:
        """Until at least ``published`` messages are settled; after the ``last`` wait, raise if
        any was refused (before it, the count of refusals would still be partial)."""
        deadline = time.monotonic() + CONFIRM_TIMEOUT_SECONDS
        while self.settled < published:
            left = deadline - time.monotonic()
            if left <= 0:
                raise NotConfirmed(f"{published - self.settled} messages not confirmed in time")
            with contextlib.suppress(TimeoutError, socket.timeout):
                connection.drain_events(timeout=min(left, 1.0))
        if last and self.nacked:
            raise NotConfirmed(f"the broker refused {self.nacked} messages")


def publish_bodies(
    connection: Connection,
    exchange_name: str,
    bodies: Iterable[bytes],
    *,
    fallback_routing_key: str = FALLBACK_ROUTING_KEY,
) -> int:
    """Publish raw JSON bodies (persistent) and wait for the broker's confirms; return how many
    were sent. Raises NotConfirmed when the broker refused or did not confirm some."""
    exchange = Exchange(exchange_name, type="topic", durable=True)
    total = 0
    # A connection with ``confirm_publish`` waits for each message's confirm itself (and takes
    # the confirm frames, which our callbacks then never see); the demo's embedded transport
    # stores a message within the publish call and has no confirms.
    options: dict[str, Any] = dict(connection.transport_options or {})
    each_confirmed = bool(options.get("confirm_publish"))
    with connection.channel() as channel:
        producer = Producer(channel, exchange=exchange)
        exchange(channel).declare()
        confirmable = hasattr(channel, "confirm_select") and not each_confirmed
        confirms = _Confirms(producer.channel) if confirmable else None
        for body in bodies:
            producer.publish(
                body,
                routing_key=routing_key_for(body, fallback_routing_key),
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
                # Counting confirms, a lost connection is an error: kombu's retry would re-send
                # on a new channel outside confirm mode, and what the old one had not confirmed
                # would be neither known sent nor sent again.
                retry=confirms is None,
            )
            total += 1
            if confirms is None:
                continue
            confirms.sent()
            if len(confirms.pending) >= CONFIRM_WINDOW:
                confirms.wait(connection, confirms.published - CONFIRM_WINDOW // 2)
        if confirms is not None:
            confirms.wait(connection, confirms.published, last=True)
    return total


#: Times a line is sent again after the connection was lost, each time to the next node.
RECONNECTS = 3


def _send(
    connection: Connection,
    current: Producer,
    producer: Callable[[], Producer],
    body: bytes,
    key: str,
    returned: list[str],
) -> Producer:
    """Publish one line; the producer to use for the next. A lost node is replaced by the next
    of a cluster's nodes (the failover list in RECON_BROKER_URL) and the line sent again: if the
    lost node had taken it, the intake keeps one copy (it de-duplicates on event_id)."""
    for attempt in range(RECONNECTS + 1):
        returned.clear()
        try:
            current.publish(
                body,
                routing_key=key,
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
                mandatory=True,
            )
            return current
        except connection.connection_errors:
            if attempt == RECONNECTS:
                raise
            _close(current)
            connection.close()
            connection.ensure_connection(max_retries=RECONNECTS)
            current = producer()
    return current


def dumps(event: dict[str, object]) -> bytes:
    return json.dumps(event, separators=(",", ":"), default=str).encode()


#: What became of one published line.
PUBLISHED = "published"
#: The broker took it, but no queue is bound for its routing key: it is gone.
UNROUTABLE = "unroutable"
#: The broker did not take it (a nack, or a channel error such as a message over its size limit).
REFUSED = "refused"


@dataclass(frozen=True)
class Fate:
    line: int
    routing_key: str
    fate: str
    reason: str = ""


def publish_lines(
    connection: Connection,
    exchange_name: str,
    lines: Iterable[tuple[int, bytes]],
    *,
    fallback_routing_key: str = FALLBACK_ROUTING_KEY,
) -> Iterator[Fate]:
    """Publish numbered bodies one at a time, each ``mandatory`` and confirmed, and say what
    became of each: the broker returns an unroutable message before it confirms it, so its fate
    is known when the confirm arrives. ``connection`` must have ``confirm_publish`` set."""
    exchange = Exchange(exchange_name, type="topic", durable=True)
    returned: list[str] = []

    def on_return(exc: Any, *_: Any) -> None:
        returned.append(str(getattr(exc, "reply_text", "") or exc))

    def producer() -> Producer:
        channel = connection.channel()
        exchange(channel).declare()
        return Producer(channel, exchange=exchange, on_return=on_return)

    current = producer()
    try:
        for number, body in lines:
            key = routing_key_for(body, fallback_routing_key)
            try:
                current = _send(connection, current, producer, body, key, returned)
            except MessageNacked:
                yield Fate(number, key, REFUSED, "the broker did not confirm it (nack)")
                continue
            except connection.channel_errors as exc:
                # The broker closed the channel over this message; the next one gets a new one.
                yield Fate(number, key, REFUSED, _reply(exc))
                _close(current)
                current = producer()
                continue
            if returned:
                yield Fate(number, key, UNROUTABLE, f"no queue is bound for {key!r}")
            else:
                yield Fate(number, key, PUBLISHED)
    finally:
        _close(current)


def _close(producer: Producer) -> None:
    with contextlib.suppress(Exception):
        producer.channel.close()


def _reply(exc: BaseException) -> str:
    text = str(getattr(exc, "reply_text", "") or exc).strip()
    return text.split(" - ", 1)[-1].splitlines()[0] if text else type(exc).__name__
