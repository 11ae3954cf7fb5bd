"""`recon audit ...`: read the audit trail. Tables for people; JSON and CSV for scripts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TextIO

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from models.outcomes import KINDS, Outcome
from models.session import engine_for, unit_of_work
from worker import audit as queries
from worker.audit.output import (
    FORMATS,
    STREAM_FORMATS,
    UTC_DATETIME,
    describe_window,
    render,
    resolve_window,
    wide_option,
)
from worker.settings import load_settings

#: The columns a person reads in a terminal; scripts get every field of Outcome.AUDIT_FIELDS.
OUTCOME_TABLE_FIELDS = (
    "at", "kind", "redemption_id", "order_ref", "bill_number", "attempt", "status", "code",
    "http_status", "message", "request_id",
)  # fmt: skip
# What an 80-column terminal shows; --wide (or json/csv) has the rest.
OUTCOME_NARROW = ("at", "redemption_id", "status", "code", "message")
UNKNOWN_NARROW = ("event_id", "order_ref", "points", "attempts", "last_message")
REJECTED_NARROW = ("received_at", "event_id", "size", "reason")
UNMATCHED_NARROW = ("case", "kind", "redemption_id", "order_ref", "recorded_at")
DEFAULT_LIMIT = 1000
LAST_DAY = dt.timedelta(hours=24)

Command = Callable[..., Any]


def _format_option(command: Command) -> Command:
    command = wide_option(command)
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="table for people; json (an array of rows) or csv (with a header) for scripts.",
    )(command)


def _limit_option(command: Command) -> Command:
    return click.option(
        "--limit",
        type=click.IntRange(min=1),
        default=DEFAULT_LIMIT,
        show_default=True,
        help="Show at most this many rows (a note on stderr says when more were left out).",
    )(command)


def _window_options(default: str) -> Callable[[Command], Command]:
    def decorate(command: Command) -> Command:
        command = click.option(
            "--until",
            type=UTC_DATETIME,
            help="End of the window, excluded (ISO 8601 date or date-time; naive = UTC). "
            + default,
        )(command)
        return click.option(
            "--since",
            type=UTC_DATETIME,
            help="Start of the window, included (ISO 8601 date or date-time; naive = UTC).",
        )(command)

    return decorate


@contextmanager
def _session() -> Iterator[Session]:
    url = load_settings().database_url
    try:
        with unit_of_work(engine_for(url)) as session:
            yield session
    except OperationalError as exc:
        where = make_url(url).render_as_string(hide_password=True)
        reason = str(exc.orig).strip().splitlines()[0]
        raise click.ClickException(f"cannot query the database at {where}: {reason}") from exc


def _history(
    what: str,
    key: str,
    query: Callable[..., list[Outcome]],
    criteria: Mapping[str, Any],
    *,
    since: dt.datetime | None,
    until: dt.datetime | None,
    fmt: str,
    limit: int,
) -> None:
    """Run one of the by-key lookups and show its outcomes."""
    since, until = resolve_window(since, until)
    with _session() as session:
        rows = query(session=session, since=since, until=until, limit=limit, **criteria)
    window = describe_window(since, until)
    _show_outcomes(
        rows,
        fmt,
        title=f"Outcomes of {what} {key}{window}",
        empty=f"No outcomes for {what} {key}{window}.",
        limit=limit,
    )


def _show_outcomes(
    outcomes: Sequence[Outcome], fmt: str, *, title: str, empty: str, limit: int | None
) -> None:
    if fmt == "table":
        # Raw values: the table shows times to the second; scripts get as_row()'s full text.
        rows: Iterable[Mapping[str, Any]] = (
            {name: getattr(outcome, name) for name in OUTCOME_TABLE_FIELDS} for outcome in outcomes
        )
        render(rows, OUTCOME_TABLE_FIELDS, fmt, title, empty=empty, narrow=OUTCOME_NARROW)
    else:
        rows = (outcome.as_row() for outcome in outcomes)
        render(rows, Outcome.AUDIT_FIELDS, fmt, title, empty=empty)
    _note_if_cut(len(outcomes), limit)


def _note_if_cut(count: int, limit: int | None) -> None:
    if limit is not None and count >= limit:
        click.echo(
            f"(showing the first {limit} rows; there may be more: narrow --since/--until "
            "or raise --limit)",
            err=True,
        )


@click.group()
def audit() -> None:
    """Query the audit trail: what happened to a bill, redemption, order or customer.

    Every command takes --format table|json|csv (export: csv|jsonl). Times are UTC ISO 8601;
    --since/--until take an ISO 8601 date or date-time (naive = UTC) and select
    since <= at < until.

    \b
    Examples:
      recon audit bill B-1001
      recon audit summary --since 2026-11-20 --until 2026-11-21
      recon audit failures --format csv > failures.csv
    """


@audit.command()
@click.argument("bill_number")
@_window_options("Default: no limit.")
@_format_option
@_limit_option
def bill(
    bill_number: str, since: dt.datetime | None, until: dt.datetime | None, fmt: str, limit: int
) -> None:
    """Every outcome recorded for BILL_NUMBER, oldest first.

    \b
    Examples:
      recon audit bill B-1001
      recon audit bill B-1001 --since 2026-11-01 --format json
    """
    _history(
        "bill", bill_number, queries.outcomes_for_bill, {"bill_number": bill_number},
        since=since, until=until, fmt=fmt, limit=limit,
    )  # fmt: skip


@audit.command()
@click.argument("redemption_id")
@click.option("--kind", type=click.Choice(KINDS), help="Only outcomes of this kind.")
@_window_options("Default: no limit.")
@_format_option
@_limit_option
def redemption(
    redemption_id: str,
    kind: str | None,
    since: dt.datetime | None,
    until: dt.datetime | None,
    fmt: str,
    limit: int,
) -> None:
    """Every outcome of the platform's REDEMPTION_ID, oldest first.

    Coupon ids, points ids and vendor configuration ids may coincide: --kind narrows.

    \b
    Examples:
      recon audit redemption 700123
      recon audit redemption 700123 --kind coupon --format csv
    """
    criteria = {"redemption_id": redemption_id, "kind": kind}
    _history(
        "redemption", redemption_id, queries.outcomes_for_redemption, criteria,
        since=since, until=until, fmt=fmt, limit=limit,
    )  # fmt: skip


@audit.command()
@click.argument("order_ref")
@_window_options("Default: no limit.")
@_format_option
@_limit_option
def order(
    order_ref: str, since: dt.datetime | None, until: dt.datetime | None, fmt: str, limit: int
) -> None:
    """Every outcome of ORDER_REF, oldest first.

    \b
    Examples:
      recon audit order WEB-2026-0042
      recon audit order WEB-2026-0042 --format json | jq '.[] | .status'
    """
    _history(
        "order", order_ref, queries.outcomes_for_order, {"order_ref": order_ref},
        since=since, until=until, fmt=fmt, limit=limit,
    )  # fmt: skip


@audit.command()
@click.argument("identifier_value")
@_window_options("Default: no limit.")
@_format_option
@_limit_option
def customer(
    identifier_value: str,
    since: dt.datetime | None,
    until: dt.datetime | None,
    fmt: str,
    limit: int,
) -> None:
    """Every outcome of the customer IDENTIFIER_VALUE (mobile, email, ...), oldest first.

    \b
    Examples:
      recon audit customer 919800000001
      recon audit customer 919800000001 --since 2026-11-01T00:00 --limit 50
    """
    _history(
        "customer", identifier_value, queries.outcomes_for_customer,
        {"customer": identifier_value}, since=since, until=until, fmt=fmt, limit=limit,
    )  # fmt: skip


@audit.command()
@_window_options("Default: now; the window is the 24 hours before --until.")
@_format_option
def summary(since: dt.datetime | None, until: dt.datetime | None, fmt: str) -> None:
    """Count outcomes by kind, status and code in a window (default: the last 24 hours).

    \b
    Examples:
      recon audit summary
      recon audit summary --since 2026-11-20 --until 2026-11-21 --format json
    """
    since, until = resolve_window(since, until, default=LAST_DAY)
    with _session() as session:
        rows = queries.count_outcomes(session=session, since=since, until=until)
    window = describe_window(since, until)
    render(
        rows,
        queries.SUMMARY_FIELDS,
        fmt,
        f"Outcomes{window}",
        empty=f"No outcomes{window}.",
    )
    if fmt == "table" and rows:
        click.echo(f"total: {sum(row['count'] for row in rows)}")


@audit.command()
@_window_options("Default: now; the window is the 24 hours before --until.")
@_format_option
@_limit_option
def failures(since: dt.datetime | None, until: dt.datetime | None, fmt: str, limit: int) -> None:
    """Outcomes that failed or gave up in a window (default: the last 24 hours), newest first.

    \b
    Examples:
      recon audit failures
      recon audit failures --since 2026-11-14 --format csv > failures.csv
    """
    since, until = resolve_window(since, until, default=LAST_DAY)
    with _session() as session:
        rows = queries.failed_outcomes(session=session, since=since, until=until, limit=limit)
    window = describe_window(since, until)
    _show_outcomes(
        rows,
        fmt,
        title=f"Failed and gave_up outcomes{window}",
        empty=f"No failed or gave_up outcomes{window}.",
        limit=limit,
    )


@audit.command()
@_format_option
@_limit_option
def unknown(fmt: str, limit: int) -> None:
    """Points redeem requests whose effect is unknown and that no operator has resolved.

    Each waits for `recon resolve`: check the customer's points on the platform first.

    \b
    Examples:
      recon audit unknown
      recon audit unknown --format json
    """
    with _session() as session:
        rows = queries.unresolved_unknown_requests(session=session, limit=limit)
    render(
        rows,
        queries.UNKNOWN_FIELDS,
        fmt,
        "Points redeem requests waiting for an operator",
        empty="No unresolved unknown points redeem requests.",
        narrow=UNKNOWN_NARROW,
    )
    _note_if_cut(len(rows), limit)


@audit.command()
@click.option(
    "--older-than-hours",
    type=click.IntRange(min=0),
    default=24,
    show_default=True,
    help="Only what has waited at least this long (events may arrive in any order).",
)
@_format_option
@_limit_option
def unmatched(older_than_hours: int, fmt: str, limit: int) -> None:
    """Redemptions no bill has claimed, and listed redemptions that never arrived.

    The `case` column says which: redemption_without_bill (a redemption with no transaction
    after N hours) or listed_redemption_missing (a bill listed it explicitly; no such
    redemption was ever received).

    \b
    Examples:
      recon audit unmatched
      recon audit unmatched --older-than-hours 72 --format csv
    """
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(hours=older_than_hours)
    with _session() as session:
        rows = queries.unmatched_work(session=session, older_than=cutoff, limit=limit)
    render(
        rows,
        queries.UNMATCHED_FIELDS,
        fmt,
        f"Unmatched for more than {older_than_hours} h",
        empty=f"Nothing unmatched for more than {older_than_hours} h.",
        narrow=UNMATCHED_NARROW,
    )
    _note_if_cut(len(rows), limit)


@audit.command()
@_window_options("Default: now; the window is the 24 hours before --until.")
@_format_option
@_limit_option
def rejected(since: dt.datetime | None, until: dt.datetime | None, fmt: str, limit: int) -> None:
    """Messages the intake rejected in a window (default: the last 24 hours), newest first.

    Each row has the reason, routing key, event id when known, size in bytes and a safe excerpt
    of the body (credentials masked, control characters escaped).

    \b
    Examples:
      recon audit rejected
      recon audit rejected --since 2026-11-20 --format json
    """
    since, until = resolve_window(since, until, default=LAST_DAY)
    with _session() as session:
        rows = queries.rejected_messages(session=session, since=since, until=until, limit=limit)
    window = describe_window(since, until)
    render(
        rows,
        queries.REJECTED_FIELDS,
        fmt,
        f"Rejected intake messages{window}",
        empty=f"No rejected intake messages{window}.",
        narrow=REJECTED_NARROW,
    )
    _note_if_cut(len(rows), limit)


@audit.command()
@_window_options("Default: no limit.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(STREAM_FORMATS),
    default="csv",
    show_default=True,
    help="csv (a header, then one row per outcome) or jsonl (one JSON object per line).",
)
@click.option(
    "--output",
    "-o",
    type=click.File("w", encoding="utf-8"),
    default="-",
    help="File to write (default: standard output).",
)
def export(since: dt.datetime | None, until: dt.datetime | None, fmt: str, output: TextIO) -> None:
    """Stream every outcome in a window, oldest first, without holding them in memory.

    \b
    Examples:
      recon audit export --since 2026-11-01 --until 2026-12-01 > november.csv
      recon audit export --format jsonl -o outcomes.jsonl
    """
    since, until = resolve_window(since, until)
    with _session() as session:
        rows = (
            o.as_row() for o in queries.stream_outcomes(session=session, since=since, until=until)
        )
        count = render(rows, Outcome.AUDIT_FIELDS, fmt, out=output)
    click.echo(f"exported {count} outcomes{describe_window(since, until)}", err=True)


def register(group: click.Group) -> None:
    group.add_command(audit)
