"""One dead-lettered message as `recon dead` and the audit page see it.

Everything in a dead letter but its routing key and the x-death entry's queue and reason was
written by whoever published it, so it is shown masked, escaped and cut
(``worker/observe/masking.py``), and never used as an address (``worker/ops/replay_rules.py``
decides where a replay may go).

A message is named by an ``id`` the product computes (a digest of its body, headers, properties
and routing key), never by its publisher's ``message_id``: two different messages cannot be
made to share one, and the same message keeps its id while it waits.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from kombu.message import Message

from worker.observe.masking import CUT, MAX_DEPTH, redact, shown, shown_excerpt
from worker.queues import (
    DEAD_AT_HEADER,
    DELIVERY_COUNT_HEADER,
    ORIGINAL_EXCHANGE_HEADER,
    REASON_HEADER,
)

EXCERPT_CHARS = 300
SHOWN_CHARS = 255
REASON_CHARS = 1_000
HEADERS_CHARS = 4_000
#: Properties that belong to the message (not to one delivery of it), for its id.
_IDENTITY_PROPERTIES = ("content_type", "content_encoding", "message_id", "correlation_id", "type")


@dataclass(frozen=True)
class DeadMessage:
    """A dead letter: display fields are safe to print; the raw ones feed the replay rules."""

    id: str
    queue: str
    reason: str | None
    count: int
    source_queue: str | None
    exchange: str | None
    routing_key: str
    dead_at: dt.datetime | None
    content_type: str | None
    content_encoding: str | None
    size: int
    body: bytes = field(repr=False)
    headers: dict[str, Any] = field(repr=False)
    properties: dict[str, Any] = field(repr=False)
    raw_routing_key: str = field(repr=False, default="")
    raw_content_type: str | None = field(repr=False, default=None)
    raw_content_encoding: str | None = field(repr=False, default=None)

    LIST_FIELDS = (
        "id", "dead_at", "reason", "count", "source_queue", "exchange", "routing_key", "size",
        "excerpt",
    )  # fmt: skip

    @property
    def excerpt(self) -> str:
        """The body as safe text: credentials masked, escaped, cut short."""
        return shown_excerpt(self.body, EXCERPT_CHARS)

    def safe_headers(self) -> str:
        """The headers as one line of JSON for people: credentials masked, escaped, bounded."""
        text = json.dumps(redact(plain(self.headers)), ensure_ascii=False, default=str)
        return shown(text, HEADERS_CHARS)

    def as_row(self) -> dict[str, Any]:
        row = {name: getattr(self, name) for name in self.LIST_FIELDS if name != "excerpt"}
        return {**row, "excerpt": self.excerpt}

    def detail(self) -> dict[str, Any]:
        """What the operator log keeps about the message (no body; display-safe text)."""
        return {
            "reason": self.reason,
            "count": self.count,
            "source_queue": self.source_queue,
            "exchange": self.exchange,
            "routing_key": self.routing_key,
            "size": self.size,
        }


def latest_death(headers: dict[str, Any]) -> dict[str, Any] | None:
    """The first x-death entry: after a death, its queue and reason are the broker's own."""
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return deaths[0]
    return None


def describe(message: Message, queue: str) -> DeadMessage:
    body = message.body if isinstance(message.body, bytes) else str(message.body).encode()
    headers = dict(message.headers or {})
    properties = dict(message.properties or {})
    properties.pop("application_headers", None)
    routing_key = text((message.delivery_info or {}).get("routing_key")) or ""
    death = latest_death(headers)
    if death is not None:
        reason, exchange = death.get("reason"), death.get("exchange")
        source_queue, dead_at = death.get("queue"), _when(death.get("time"))
        count = _count(death.get("count"))
    else:
        reason, exchange = headers.get(REASON_HEADER), headers.get(ORIGINAL_EXCHANGE_HEADER)
        source_queue, dead_at = None, _when(headers.get(DEAD_AT_HEADER))
        count = 1 if REASON_HEADER in headers else 0
    return DeadMessage(
        id=identity(body, headers, properties, routing_key),
        queue=queue,
        reason=shown(reason, REASON_CHARS) if reason is not None else None,
        count=count,
        source_queue=shown(source_queue, SHOWN_CHARS) if source_queue is not None else None,
        exchange=shown(exchange, SHOWN_CHARS) if exchange is not None else None,
        routing_key=shown(routing_key, SHOWN_CHARS),
        dead_at=dead_at or _when(properties.get("timestamp")),
        content_type=shown(message.content_type, SHOWN_CHARS) if message.content_type else None,
        content_encoding=(
            shown(message.content_encoding, SHOWN_CHARS) if message.content_encoding else None
        ),
        size=len(body),
        body=body,
        headers=headers,
        properties=properties,
        raw_routing_key=routing_key,
        raw_content_type=message.content_type or None,
        raw_content_encoding=message.content_encoding or None,
    )


def identity(body: bytes, headers: dict[str, Any], properties: dict[str, Any], key: str) -> str:
    """The id operators name a message by: a digest of all of it, computed here.

    Not of ``x-delivery-count``: the quorum dead-letter queue rewrites it each time a browse gives
    the message back, and the id must not change while the message waits. (Two messages equal in
    all else are the same message to an operator: either may be shown or replayed.)"""
    kept = {name: properties.get(name) for name in _IDENTITY_PROPERTIES}
    own = {name: value for name, value in headers.items() if name != DELIVERY_COUNT_HEADER}
    parts = [hashlib.sha256(body).hexdigest(), plain(own), plain(kept), key]
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def plain(value: Any, depth: int = 0) -> Any:
    """Header values as JSON-ready data (AMQP tables hold bytes and datetimes), depth-bounded."""
    if depth >= MAX_DEPTH:
        return CUT
    if isinstance(value, dict):
        return {str(key): plain(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item, depth + 1) for item in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 1


def _when(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return dt.datetime.fromtimestamp(value, dt.UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            return _when(dt.datetime.fromisoformat(value[:64]))
        except ValueError:
            return None
    return None
