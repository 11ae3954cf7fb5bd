"""Where a dead letter may be replayed: decided by the product, never by the message.

A publisher can set any header, including ``x-recon-*`` and a whole ``x-death`` list: RabbitMQ
3.10 keeps a publisher's x-death entry when it matches the queue and reason of a real death,
with the publisher's exchange and routing keys in it (``tests/security/test_replay_provenance.py``
shows it). What the publisher cannot forge: the queue and reason of the first x-death entry
after a death, the routing key the dead copy travels with (the original one; the intake's own
dead copies travel with it too), and rows in our database. So:

- an **event** goes back only to the configured events exchange, with its routing key, which
  must be an event type; the intake validates the body again anyway, so this gives a publisher
  nothing it could not do by publishing to ``orders`` itself. Anything claiming another origin
  is refused, and so is a broker-dead-lettered message carrying ``x-recon-*`` headers (only the
  intake writes them, and it never dead-letters through the broker);
- a **task** message goes back to its task queue only when the worker recorded dead-lettering a
  message asking exactly this (``models/dead_tasks.py``), and only once; the copy is built afresh
  (new task id, no callbacks), not republished as it came.

Everything else is refused, with a reason for the operator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from models.dead_tasks import task_fingerprint
from worker.observe.masking import parse_json, shown
from worker.ops.dead_message import DeadMessage, latest_death, text
from worker.queues import ORIGINAL_EXCHANGE_HEADER, ORIGINAL_ROUTING_KEY_HEADER

RECON_PREFIX = "x-recon-"


@dataclass(frozen=True)
class Topology:
    """The destinations the product allows: taken from the settings and the code, not messages."""

    events_exchange: str
    events_queue: str
    event_types: frozenset[str]
    task_exchange: str
    task_queues: frozenset[str]


@dataclass(frozen=True)
class EventReplay:
    exchange: str
    routing_key: str


@dataclass(frozen=True)
class TaskReplay:
    """A task call to send again once the worker's record of it is found (by fingerprint)."""

    task_name: str
    task_id: str
    args: list[Any]
    kwargs: dict[str, Any]
    fingerprint: str


@dataclass(frozen=True)
class Refusal:
    why: str


Plan = EventReplay | TaskReplay | Refusal


def plan(dead: DeadMessage, topology: Topology) -> Plan:
    """What a replay of ``dead`` may do, from facts no publisher controls."""
    headers = dead.headers
    death = latest_death(headers)
    died_in = text(death.get("queue")) if death else None
    if "task" in headers or died_in in topology.task_queues:
        return _task_plan(dead, topology, died_in)
    claims = sorted(key for key in headers if key.startswith(RECON_PREFIX))
    if death is not None and claims:
        return Refusal(
            "refused: it carries x-recon-* headers although the broker dead-lettered it; only "
            "the intake writes them and it never dead-letters through the broker, so its "
            "publisher set them"
        )
    if death is not None:
        if died_in != topology.events_queue:
            return Refusal(
                f"refused: it died in queue {_said(died_in)}; only messages of the events queue "
                f"{topology.events_queue!r} go back to the events exchange"
            )
        keys = death.get("routing-keys")
        first_key = text(keys[0]) if isinstance(keys, list) and keys else None
        claimed = (text(death.get("exchange")), first_key)
    elif claims:
        claimed = (
            text(headers.get(ORIGINAL_EXCHANGE_HEADER)),
            text(headers.get(ORIGINAL_ROUTING_KEY_HEADER)),
        )
    else:
        return Refusal("refused: nothing on it says the broker or the intake dead-lettered it")
    routing_key = dead.raw_routing_key
    if (
        claimed != (topology.events_exchange, routing_key)
        or routing_key not in topology.event_types
    ):
        return Refusal(
            f"refused: it says it came from exchange {_said(claimed[0])} with routing key "
            f"{_said(claimed[1])}; a replay goes only to the events exchange "
            f"{topology.events_exchange!r} with the event type it was published with"
        )
    return EventReplay(exchange=topology.events_exchange, routing_key=routing_key)


def _task_plan(dead: DeadMessage, topology: Topology, died_in: str | None) -> Plan:
    name, task_id = text(dead.headers.get("task")), text(dead.headers.get("id"))
    if died_in not in topology.task_queues:
        return Refusal(
            f"refused: it carries Celery task headers (task {_said(name)}) but did not die in a "
            "task queue: task messages are never taken from publishers"
        )
    call = _task_call(dead.body)
    if call is None or not name or not task_id:
        return Refusal(
            "refused: not a plain task call of the product's (protocol 2 JSON, no callbacks, "
            "chains or chords)"
        )
    args, kwargs = call
    fingerprint = task_fingerprint(task_name=name, task_id=task_id, args=args, kwargs=kwargs)
    return TaskReplay(name, task_id, args, kwargs, fingerprint)


def _task_call(body: bytes) -> tuple[list[Any], dict[str, Any]] | None:
    decoded = parse_json(body, exact=False)  # as Celery decodes it for the task
    if not (isinstance(decoded, list) and len(decoded) == 3):
        return None
    args, kwargs, embed = decoded
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        return None
    if embed is not None and (not isinstance(embed, dict) or any(embed.values())):
        return None
    return args, kwargs


def unrecorded(task: TaskReplay) -> Refusal:
    return Refusal(
        f"refused: the worker has no record of dead-lettering task {_said(task.task_name)} "
        f"(id {_said(task.task_id)}) with these arguments, or it was replayed already; only "
        "such a task goes back to a task queue"
    )


def _said(value: str | None) -> str:
    """A publisher's claim, quoted for the operator (masked, escaped, short)."""
    return "none" if value is None else repr(shown(value, 80))
