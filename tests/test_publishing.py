"""Publishing events the way the demo, the benchmark and the end-to-end tests do: every body is
confirmed by the broker before ``publish_bodies`` returns (real RabbitMQ, quorum queues)."""

from __future__ import annotations

import uuid

import pytest
from kombu import Connection, Exchange, Queue

from worker.tools.publishing import NotConfirmed, dumps, publish_bodies


def _queue(conn: Connection, exchange: str, **arguments: object) -> Queue:
    queue = Queue(
        f"{exchange}.q",
        Exchange(exchange, type="topic", durable=True),
        routing_key="#",
        durable=True,
        queue_arguments={"x-queue-type": "quorum", **arguments},
    )(conn.default_channel)
    queue.declare()
    return queue


def test_every_body_is_in_the_queue_when_publishing_returns(amqp_url):
    exchange = f"pub-{uuid.uuid4().hex[:8]}"
    with Connection(amqp_url) as conn:
        queue = _queue(conn, exchange)
        bodies = (dumps({"type": "coupon.redeemed", "n": n}) for n in range(2_500))

        sent = publish_bodies(conn, exchange, bodies)

        assert sent == 2_500
        # Counted at once, with no wait: the broker confirmed every one before the return.
        assert queue.queue_declare(passive=True).message_count == 2_500
        queue.delete()


def test_messages_the_broker_refuses_are_an_error_not_a_silent_loss(amqp_url):
    exchange = f"pub-{uuid.uuid4().hex[:8]}"
    with Connection(amqp_url) as conn:
        queue = _queue(conn, exchange, **{"x-max-length": 10, "x-overflow": "reject-publish"})
        # A quorum queue applies its limit a little late: enough bodies that some are refused.
        bodies = (dumps({"type": "coupon.redeemed", "n": n}) for n in range(1_000))

        with pytest.raises(NotConfirmed, match=r"refused (\d+) messages") as refused:
            publish_bodies(conn, exchange, bodies)

        kept = queue.queue_declare(passive=True).message_count
        assert kept >= 10
        assert kept + int(refused.value.args[0].split()[3]) == 1_000  # each kept or refused
        queue.delete()


def test_a_connection_that_confirms_each_message_itself_publishes_the_same(amqp_url):
    exchange = f"pub-{uuid.uuid4().hex[:8]}"
    with Connection(amqp_url, transport_options={"confirm_publish": True}) as conn:
        queue = _queue(conn, exchange)

        sent = publish_bodies(conn, exchange, (dumps({"type": "x", "n": n}) for n in range(50)))

        assert sent == 50
        assert queue.queue_declare(passive=True).message_count == 50
        queue.delete()
