"""`recon dead ...`: dead-lettered messages: list, show, replay, purge (on record)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click
import structlog
from kombu import Connection
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from models.dead_tasks import mark_replayed, recorded_dead_task
from models.operator_log import DEAD_PURGE, DEAD_REPLAY, DEAD_REPLAY_REFUSED
from models.session import engine_for, shown_url, unit_of_work
from worker.audit.output import FORMATS, render, utc_text
from worker.intake.contract import EVENT_TYPES
from worker.ops import deadletters, replay_rules
from worker.ops.dead_message import DeadMessage
from worker.ops.operator_log import record_action, who
from worker.queues import TASK_EXCHANGE
from worker.settings import Settings, load_settings

log = structlog.get_logger(__name__)

DEFAULT_LIMIT = 100
_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class Duration(click.ParamType):
    """``90s``, ``30m``, ``12h`` or ``7d``."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, dt.timedelta):
            return value
        match = _DURATION.match(str(value))
        if match is None:
            self.fail(f"{value!r} is not a duration (examples: 90s, 30m, 12h, 7d)", param, ctx)
        return dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@contextmanager
def _broker() -> Iterator[Connection]:
    settings = load_settings()
    connection = Connection(settings.broker_url, transport_options={"confirm_publish": True})
    try:
        connection.ensure_connection(max_retries=1)
    except Exception as exc:
        where = connection.as_uri()  # the password is masked
        raise click.ClickException(f"cannot reach RabbitMQ at {where}: {exc}") from None
    try:
        yield connection
    finally:
        connection.release()


def _topology(settings: Settings) -> replay_rules.Topology:
    """Where replays may go: the configured events exchange and the product's task queues."""
    from worker.app import task_queue_names

    return replay_rules.Topology(
        events_exchange=settings.events_exchange,
        events_queue=settings.events_queue,
        event_types=frozenset(EVENT_TYPES),
        task_exchange=TASK_EXCHANGE.name,
        task_queues=frozenset(task_queue_names()),
    )


def _goes(dead: DeadMessage, topology: replay_rules.Topology) -> str:
    """Where a replay of ``dead`` would go, or why it would not, in a few words."""
    decided = replay_rules.plan(dead, topology)
    if isinstance(decided, replay_rules.EventReplay):
        return f"{decided.exchange} / {decided.routing_key}"
    if isinstance(decided, replay_rules.TaskReplay):
        return "its task queue, if the worker recorded dead-lettering it (checked at replay)"
    return decided.why


def _recorder(
    session: Session, *, action: str, operator: str, reason: str
) -> Callable[[DeadMessage], None]:
    def record(dead: DeadMessage) -> None:
        # Committed before the dead copy is acked: an action is never done without its row.
        record_action(
            session, operator=operator, action=action, reason=reason, target=dead.queue,
            subject=dead.id, detail=dead.detail(),
        )  # fmt: skip
        session.commit()

    return record


def _replay_recorders(
    session: Session, *, operator: str, reason: str
) -> tuple[Callable[[deadletters.Replayed], None], Callable[[DeadMessage, str], None]]:
    """What a replay writes: its operator-log row (and uses up a dead task's record), or the
    refusal, logged and on record too, with who tried and why."""

    def replayed(done: deadletters.Replayed) -> None:
        if done.record is not None:
            mark_replayed(session, record_id=done.record.id)
        detail = {**done.message.detail(), "replayed_to": [done.exchange, done.routing_key]}
        record_action(
            session, operator=operator, action=DEAD_REPLAY, reason=reason,
            target=done.message.queue, subject=done.message.id, detail=detail,
        )  # fmt: skip
        session.commit()

    def refused(dead: DeadMessage, why: str) -> None:
        log.warning("dead.replay_refused", message=dead.id, queue=dead.queue, why=why)
        record_action(
            session, operator=operator, action=DEAD_REPLAY_REFUSED, reason=reason,
            target=dead.queue, subject=dead.id, detail={**dead.detail(), "refused": why},
        )  # fmt: skip
        session.commit()

    return replayed, refused


@contextmanager
def _operator_log() -> Iterator[Session]:
    """The database session the operator log is written in; a database problem is one line."""
    url = load_settings().database_url
    try:
        with unit_of_work(engine_for(url)) as session:
            # Checked before any message moves, so a database that is down moves none.
            session.execute(select(1))
            yield session
    except SQLAlchemyError as exc:
        where = shown_url(url)
        raise click.ClickException(
            f"cannot write the operator log at {where} ({type(exc).__name__}); the messages "
            "not yet recorded stay dead-lettered"
        ) from None


def _require_reason(reason: str) -> str:
    if not reason.strip():
        raise click.BadParameter("say why", param_hint="--reason")
    return reason.strip()


@click.group()
def dead() -> None:
    """Dead-lettered messages (queue recon.dead): list, show, replay, purge.

    Replays and purges are recorded in the operator log with who (--operator, default the
    login name) and why (--reason).

    \b
    Examples:
      recon dead list
      recon dead show 3f2a9c0d1e4b5a69
      recon dead replay 3f2a9c0d1e4b5a69 --reason "platform fixed"
      recon dead replay --all --reason "database was down"
      recon dead purge --older-than 30d --reason "reviewed, obsolete" --yes
    """


@dead.command(name="list")
@click.option(
    "--limit", type=click.IntRange(1, 10_000), default=DEFAULT_LIMIT, show_default=True,
    help="Show at most this many messages (oldest first).",
)  # fmt: skip
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
def list_(limit: int, fmt: str) -> None:
    """Dead messages with their death reason, count and where they came from (none taken)."""
    topology = _topology(load_settings())
    with _broker() as connection:
        found = deadletters.peek(connection, limit=limit)
    render(
        ({**message.as_row(), "replays_to": _goes(message, topology)} for message in found),
        (*DeadMessage.LIST_FIELDS, "replays_to"),
        fmt,
        "Dead-lettered messages",
        empty="No dead-lettered messages.",
    )
    if len(found) >= limit:
        click.echo(f"(showing the first {limit}; there may be more: raise --limit)", err=True)


@dead.command()
@click.argument("message_id")
def show(message_id: str) -> None:
    """One dead message: its death, where a replay would go, headers and body excerpt.

    Everything but the id comes from the message's publisher: credentials are masked, control
    characters escaped and long values cut.
    """
    settings = load_settings()
    with _broker() as connection:
        found = deadletters.find(connection, message_id)
    if found is None:
        raise click.ClickException(f"no dead message {message_id!r} (see `recon dead list`)")
    goes = _goes(found, _topology(settings))
    click.echo(f"id:            {found.id}")
    click.echo(f"queue:         {found.queue}")
    click.echo(f"dead at:       {utc_text(found.dead_at) if found.dead_at else '-'}")
    click.echo(f"reason:        {found.reason or '-'} (count {found.count})")
    click.echo(
        f"came from:     queue {found.source_queue or '-'}, exchange {found.exchange or '-'}"
    )
    click.echo(f"routing key:   {found.routing_key or '-'}")
    click.echo(f"replays to:    {goes}")
    click.echo(f"content:       {found.content_type or '-'}, {found.size} bytes")
    click.echo("headers:       " + found.safe_headers())
    click.echo("body:          " + found.excerpt)


def _who_and_why(command: Callable[..., Any]) -> Callable[..., Any]:
    command = click.option("--operator", default=None, help="Who acts (default: the login name).")(
        command
    )
    return click.option("--reason", required=True, help="Why: kept in the operator log.")(command)


@dead.command()
@click.argument("message_ids", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Replay every dead message.")
@_who_and_why
def replay(
    message_ids: tuple[str, ...], everything: bool, reason: str, operator: str | None
) -> None:
    """Send MESSAGE_IDS (or --all) back where the product decides: an event to the events
    exchange with its event type, a task the worker itself dead-lettered to its task queue.

    A message claiming any other origin is refused (and the refusal recorded); it stays. Each
    copy is confirmed by the broker before the dead copy is removed. An id names one message.
    """
    if bool(message_ids) == everything:
        raise click.UsageError("name the messages to replay, or --all (not both)")
    reason = _require_reason(reason)
    settings = load_settings()
    with _operator_log() as session, _broker() as connection:
        record, refuse = _replay_recorders(session, operator=who(operator), reason=reason)
        done, failed = deadletters.replay(
            connection,
            ids=None if everything else set(message_ids),
            topology=_topology(settings),
            lookup=lambda fingerprint: recorded_dead_task(session, fingerprint=fingerprint),
            record=record,
            refuse=refuse,
        )
    for copy in done:
        click.echo(f"replayed {copy.message.id} to {copy.exchange!r} / {copy.routing_key!r}")
    for message, why in failed:
        click.echo(f"NOT replayed {message.id}: {why} (it stays in {message.queue})", err=True)
    missing = set(message_ids) - {c.message.id for c in done} - {m.id for m, _ in failed}
    for name in sorted(missing):
        click.echo(f"no dead message {name!r}", err=True)
    click.echo(f"{len(done)} replayed, {len(failed) + len(missing)} not", err=True)
    if failed or missing:
        raise SystemExit(1)


@dead.command()
@click.option(
    "--older-than", type=Duration(), default=None,
    help="Only messages dead for longer than this (90s, 30m, 12h, 7d). Default: all.",
)  # fmt: skip
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_who_and_why
def purge(older_than: dt.timedelta | None, yes: bool, reason: str, operator: str | None) -> None:
    """Delete dead messages for good (each one is recorded in the operator log)."""
    reason = _require_reason(reason)
    with _broker() as connection:
        waiting = deadletters.waiting(connection)
    if waiting == 0:
        click.echo("No dead-lettered messages.")
        return
    scope = f"dead for longer than {older_than}" if older_than else "all of them"
    if not yes:
        click.confirm(
            f"Delete dead messages ({scope}; {waiting} waiting)? This cannot be undone",
            abort=True,
        )
    with _operator_log() as session, _broker() as connection:
        record = _recorder(session, action=DEAD_PURGE, operator=who(operator), reason=reason)
        dropped = deadletters.purge(connection, older_than=older_than, record=record)
    click.echo(f"purged {len(dropped)} of {waiting} dead messages")


def register(group: click.Group) -> None:
    group.add_command(dead)
