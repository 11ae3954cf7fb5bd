"""Publishing events the way an order system does: plain JSON on the topic exchange."""

from __future__ import annotations

import json
from collections.abc import Iterable

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


def publish_bodies(
    connection: Connection,
    exchange_name: str,
    bodies: Iterable[bytes],
    *,
    fallback_routing_key: str = FALLBACK_ROUTING_KEY,
) -> int:
    """Publish raw JSON bodies (persistent); return how many were sent."""
    exchange = Exchange(exchange_name, type="topic", durable=True)
    sent = 0
    with connection.channel() as channel:
        producer = Producer(channel, exchange=exchange)
        exchange(channel).declare()
        for body in bodies:
            producer.publish(
                body,
                routing_key=routing_key_for(body, fallback_routing_key),
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
                retry=True,
            )
            sent += 1
    return sent


def dumps(event: dict[str, object]) -> bytes:
    return json.dumps(event, separators=(",", ":"), default=str).encode()
