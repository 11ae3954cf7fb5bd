"""Every message one fate, a batch at a time.

A message is stored (accepted, duplicate, or rejected with a reason) and acknowledged; or, only
when even a rejected row cannot be written for what the message contains, published to the
dead-letter exchange with the reason in a header and acknowledged. When the *database* is the
problem (refused, lost, timed out, shutting down) the message is neither: the caller holds it
unacknowledged and tries again when the database is back.

A batch is stored in one transaction, its tasks published with one confirm wait, and it is
acknowledged with one ``multiple`` ack after both. When the database refuses the batch for what
it holds (a data or integrity error: one bad row fails the whole statement), the batch is cut in
halves and each half tried again, down to the one message, which then gets its fate exactly as
it would have alone. One bad row among n costs about 2 log2(n) more transactions; no message is
stored twice (each attempt rolled back wholly), lost, or tried in a loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import structlog
from kombu.message import Message
from kombu.transport.virtual import Channel as VirtualChannel
from sqlalchemy import Engine

from models.session import database_unavailable, unit_of_work
from worker.intake.store import Incoming, Stored, store_batch, store_message, store_rejected
from worker.observe import metrics

log = structlog.get_logger(__name__)

UNAVAILABLE = "database_unavailable"
DEAD_LETTERED = "dead_lettered"
REQUEUED = "requeued"

T = TypeVar("T")
DeadLetter = Callable[[Message, bytes, str], None]


class DatabaseUnavailable(Exception):
    """The database could not take the message; the message itself may be fine."""


def body_bytes(message: Message) -> bytes:
    body = message.body
    if isinstance(body, str):  # a transport that decoded it: undo that with the same codec
        try:
            return body.encode(message.content_encoding or "utf-8", "surrogatepass")
        except (LookupError, UnicodeError):
            return body.encode("utf-8", "surrogatepass")
    return bytes(body)


def routing_key_of(message: Message) -> str | None:
    return (message.delivery_info or {}).get("routing_key")


def handle_batch(
    messages: Sequence[Message],
    *,
    engine: Engine,
    publish: Callable[[Sequence[Stored]], None],
    dead_letter: DeadLetter,
) -> int:
    """Give each message of a batch its fate, in order; return how many got one. The rest (a
    tail, from the first message the database was unavailable for) are still unacknowledged."""
    if len(messages) == 1:
        fate = handle_one(messages[0], engine=engine, publish=publish, dead_letter=dead_letter)
        return 0 if fate == UNAVAILABLE else 1
    incoming = [Incoming(body_bytes(m), routing_key_of(m)) for m in messages]
    try:
        stored = _in_transaction(engine, lambda session: store_batch(session, incoming))
    except DatabaseUnavailable:
        return 0
    except Exception as exc:
        # Refused for its content (or our code choked on one message): halve, and let the one
        # culprit take the single-message path.
        log.warning("intake.batch_split", size=len(messages), error=describe(exc))
        middle = len(messages) // 2
        options: dict[str, Any] = {"engine": engine, "publish": publish, "dead_letter": dead_letter}
        done = handle_batch(messages[:middle], **options)
        if done < middle:
            return done
        return middle + handle_batch(messages[middle:], **options)
    for one, result in zip(incoming, stored, strict=True):
        _log_fate(result, one.routing_key, len(one.body))
    try:
        publish(stored)
        acknowledge(messages)
    except Exception as exc:
        _requeue_after_store(messages, exc)
        return len(messages)
    for result in stored:
        metrics.intake_message(result.status)
    return len(messages)


def handle_one(
    message: Message,
    *,
    engine: Engine,
    publish: Callable[[Sequence[Stored]], None],
    dead_letter: DeadLetter,
) -> str:
    """``handle_message`` for one message of a batch, a failure after its commit included."""
    try:
        return handle_message(
            message,
            engine=engine,
            enqueue=lambda stored: publish([stored]),
            dead_letter=dead_letter,
        )
    except Exception as exc:
        _requeue_after_store([message], exc)
        return REQUEUED


def handle_message(
    message: Message,
    *,
    engine: Engine,
    enqueue: Callable[[Stored], None],
    dead_letter: DeadLetter,
) -> str:
    """Give one message its fate and return it; ``UNAVAILABLE`` leaves it to the caller."""
    raw = body_bytes(message)
    routing_key = routing_key_of(message)
    try:
        stored = _in_transaction(engine, lambda s: store_message(s, raw, routing_key=routing_key))
    except DatabaseUnavailable:
        return UNAVAILABLE
    except Exception as exc:
        # The database is up but refused this message (or our code choked on it): keep it as a
        # rejected row, which takes only bytes and escaped text.
        reason = f"could not be stored: {describe(exc)}"
        log.warning("intake.unstorable", reason=reason, routing_key=routing_key, size=len(raw))
        try:
            stored = _in_transaction(
                engine,
                lambda s: store_rejected(s, raw, reason=reason, routing_key=routing_key),
            )
        except DatabaseUnavailable:
            return UNAVAILABLE
        except Exception as second:
            reason = f"{reason}; not even as a rejected row: {describe(second)}"
            dead_letter(message, raw, reason)
            log.error("intake.dead_lettered", reason=reason, routing_key=routing_key)
            message.ack()
            metrics.intake_message(DEAD_LETTERED)
            return DEAD_LETTERED
    _log_fate(stored, routing_key, len(raw))
    enqueue(stored)
    message.ack()
    metrics.intake_message(stored.status)
    return stored.status


def acknowledge(messages: Sequence[Message]) -> None:
    """One ack for the batch: ``multiple`` acknowledges every delivery up to the last one.

    Safe because a batch is a run of consecutive deliveries and every earlier one already has
    its fate. The in-memory transport of the demo ignores ``multiple``: there, one ack each.
    """
    last = messages[-1]
    if isinstance(last.channel, VirtualChannel):
        for message in messages:
            message.ack()
        return
    last.ack(multiple=True)


def _requeue_after_store(messages: Sequence[Message], exc: Exception) -> None:
    # A failure after the commit (publish, ack): the messages stay stored, and the broker gives
    # them back (each a duplicate that names its work again) within the delivery limit.
    log.error("intake.after_store_failed", error=describe(exc), messages=len(messages))
    for message in messages:
        if message.acknowledged:
            continue
        try:
            message.requeue()
            metrics.intake_message(REQUEUED)
        except Exception:
            log.exception("intake.requeue_failed")


def _in_transaction(engine: Engine, work: Callable[[Any], T]) -> T:
    try:
        with unit_of_work(engine) as session:
            stored = work(session)
            session.commit()
            return stored
    except Exception as exc:
        if database_unavailable(exc):
            raise DatabaseUnavailable(describe(exc)) from exc
        raise


def describe(exc: BaseException) -> str:
    """A short, storable description: the error type and its first line, escaped."""
    detail = str(getattr(exc, "orig", None) or exc).splitlines()
    first = detail[0] if detail else ""
    return ascii(f"{type(exc).__name__}: {first}")[1:-1][:300]


def _log_fate(stored: Stored, routing_key: str | None, size: int) -> None:
    if stored.status == "rejected":
        log.warning(
            "intake.rejected",
            event_id=stored.event_id,
            reason=stored.reason,
            routing_key=routing_key,
            size=size,
        )
    else:
        log.info(
            "intake.stored",
            event_id=stored.event_id,
            status=stored.status,
            orders=sorted(stored.orders),
        )
