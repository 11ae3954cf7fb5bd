"""Helpers for the security suite: publish like an order system (or an attacker with the same
access), let RabbitMQ dead-letter, and run `recon dead` as an operator would."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from kombu import Connection, Producer, Queue

from tests.workers import RECON, Workers, wait_for
from worker.queues import DEAD_QUEUE


def recon_dead(workers: Workers, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RECON, "dead", *args],
        env={**workers.env, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def depth(workers: Workers, queue: str) -> int:
    with Connection(workers.settings.broker_url) as conn:
        return conn.default_channel.queue_declare(queue, passive=True)[1]


def publish(
    workers: Workers,
    body: bytes,
    *,
    routing_key: str,
    exchange: str | None = None,
    headers: dict[str, Any] | None = None,
    **properties: Any,
) -> None:
    """Publish with confirms, as anyone allowed to write to the exchange can."""
    name = exchange if exchange is not None else workers.settings.events_exchange
    with Connection(
        workers.settings.broker_url, transport_options={"confirm_publish": True}
    ) as conn:
        Producer(conn.default_channel).publish(
            body,
            exchange=name,
            routing_key=routing_key,
            headers=headers or {},
            content_type=properties.pop("content_type", "application/json"),
            content_encoding=properties.pop("content_encoding", "utf-8"),
            delivery_mode=2,
            **properties,
        )


def publish_and_let_it_expire(
    workers: Workers, body: bytes, *, routing_key: str, **kw: Any
) -> None:
    """The simplest way to have the broker dead-letter a message: it expires in the queue."""
    before = depth(workers, DEAD_QUEUE.name)
    publish(workers, body, routing_key=routing_key, expiration=0.001, **kw)
    wait_for(lambda: depth(workers, DEAD_QUEUE.name) == before + 1)


def listed(workers: Workers) -> list[dict[str, Any]]:
    result = recon_dead(workers, "list", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def take_all(workers: Workers, queue: Queue | str) -> list[Any]:
    """Every message waiting in ``queue``, taken (acknowledged)."""
    taken = []
    with Connection(workers.settings.broker_url) as conn:
        channel = conn.channel()
        channel.auto_decode = False
        bound = (queue if isinstance(queue, Queue) else Queue(queue, no_declare=True))(channel)
        while (message := bound.get(no_ack=True, accept=None)) is not None:
            taken.append(message)
        channel.close()
    return taken


def peek_all(workers: Workers, queue: str) -> list[Any]:
    """Every message waiting in ``queue``, looked at and left there (never acknowledged)."""
    seen = []
    with Connection(workers.settings.broker_url) as conn:
        channel = conn.channel()
        channel.auto_decode = False
        bound = Queue(queue, no_declare=True)(channel)
        while (message := bound.get(no_ack=False, accept=None)) is not None:
            seen.append(message)
        channel.close()  # unacknowledged: all of them go back, in order
    return seen
