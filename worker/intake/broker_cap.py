"""Whether the broker itself refuses messages the intake would refuse for their size.

The intake refuses a body over ``MAX_BODY_BYTES``, but only once RabbitMQ has delivered it. It
stores a batch once the batch holds ``MAX_BATCH_BYTES`` (consumer.py), so what a publisher can
make a worker hold is that plus one message as large as the broker accepts: 128 MiB by default.
A consumer cannot bound the prefetch by bytes (RabbitMQ answers a ``basic.qos``
``prefetch_size`` with 540 NOT_IMPLEMENTED), so the bound on one message is the broker's
``max_message_size`` (rabbitmq.conf, 3.8 and later; README, "The broker"). It is a node
setting: no policy, queue argument or AMQP method sets or reads it (a policy's
``max-length-bytes`` bounds a queue's total, not one message).

So it is checked the only way a client can: by publishing one body a byte over the limit, which a
capped broker refuses by closing the channel (406 PRECONDITION_FAILED), and one at the limit, which
it must take. Both go to the product's own task exchange with a routing key bound to no queue, so
nothing is delivered either way.
"""

from __future__ import annotations

import contextlib

from kombu import Connection

from worker.intake.wire import MAX_BODY_BYTES
from worker.queues import TASK_EXCHANGE

#: The broker refuses what the contract refuses for its size, and takes the rest.
CAPPED = "capped"
#: The broker takes bodies over the contract's limit (RabbitMQ's default: up to 128 MiB).
UNCAPPED = "uncapped"
#: The broker refuses bodies the contract accepts: valid events would be lost at publish.
TOO_LOW = "too_low"
#: The transport is not RabbitMQ (the demo's in-memory broker): nothing to check.
NOT_APPLICABLE = "not_applicable"

PROBE_ROUTING_KEY = "recon.probe.message-size"
PRECONDITION_FAILED = 406


def probe_message_cap(connection: Connection, *, limit: int = MAX_BODY_BYTES) -> str:
    """``CAPPED``, ``UNCAPPED``, ``TOO_LOW`` or ``NOT_APPLICABLE`` for the broker behind
    ``connection``; broker errors other than the cap's own refusal propagate."""
    if connection.transport.driver_type != "amqp":
        return NOT_APPLICABLE
    if _accepts(connection, limit + 1):
        return UNCAPPED
    return CAPPED if _accepts(connection, limit) else TOO_LOW


def advice(state: str, *, limit: int = MAX_BODY_BYTES) -> str | None:
    """One line for an operator when the broker is not capped as it should be, else None."""
    setting = f"max_message_size = {limit}"
    if state == UNCAPPED:
        return (
            f"the broker accepts messages over {limit:,} bytes, which the intake refuses only "
            f"after holding them: set '{setting}' in rabbitmq.conf (README, 'The broker')"
        )
    if state == TOO_LOW:
        return (
            f"the broker refuses messages of {limit:,} bytes, which the contract accepts: "
            f"raise it to '{setting}' in rabbitmq.conf"
        )
    return None


def _accepts(connection: Connection, size: int) -> bool:
    channel = connection.channel()
    try:
        TASK_EXCHANGE(channel).declare()
    except BaseException:
        channel.close()
        raise
    try:
        message = channel.prepare_message(b"\0" * size)
        # Confirmed, so a refusal cannot come after we have stopped listening.
        channel.basic_publish_confirm(
            message, exchange=TASK_EXCHANGE.name, routing_key=PROBE_ROUTING_KEY
        )
        return True
    except connection.channel_errors as exc:
        if getattr(exc, "reply_code", None) == PRECONDITION_FAILED:
            return False
        raise
    finally:
        with contextlib.suppress(Exception):
            channel.close()
