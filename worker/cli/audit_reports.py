"""`recon audit summary|failures|unknown|unmatched|rejected|export`: what happened in a window,
and what waits for someone."""

from __future__ import annotations

import datetime as dt
from typing import TextIO

import click

from models.outcomes import Outcome
from worker import audit as queries
from worker.audit.output import STREAM_FORMATS, describe_window, render, resolve_window
from worker.cli.audit_options import (
    LAST_DAY,
    audit_session,
    format_option,
    limit_option,
    show_outcomes,
    show_rows,
    window_options,
)

UNKNOWN_NARROW = ("event_id", "order_ref", "points", "attempts", "last_message")
REJECTED_NARROW = ("received_at", "event_id", "size", "reason")
UNMATCHED_NARROW = ("case", "kind", "redemption_id", "order_ref", "recorded_at")


@click.command()
@window_options("Default: now; the window is the 24 hours before --until.")
@format_option
def summary(since: dt.datetime | None, until: dt.datetime | None, fmt: str) -> None:
    """Count outcomes by kind, status and code in a window (default: the last 24 hours).

    \b
    Examples:
      recon audit summary
      recon audit summary --since 2026-11-20 --until 2026-11-21 --format json
    """
    since, until = resolve_window(since, until, default=LAST_DAY)
    with audit_session() as session:
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


@click.command()
@window_options("Default: now; the window is the 24 hours before --until.")
@format_option
@limit_option
def failures(since: dt.datetime | None, until: dt.datetime | None, fmt: str, limit: int) -> None:
    """Outcomes that failed or gave up in a window (default: the last 24 hours), newest first.

    \b
    Examples:
      recon audit failures
      recon audit failures --since 2026-11-14 --format csv > failures.csv
    """
    since, until = resolve_window(since, until, default=LAST_DAY)
    with audit_session() as session:
        rows = queries.failed_outcomes(session=session, since=since, until=until, limit=limit)
    window = describe_window(since, until)
    show_outcomes(
        rows,
        fmt,
        title=f"Failed and gave_up outcomes{window}",
        empty=f"No failed or gave_up outcomes{window}.",
        limit=limit,
    )


@click.command()
@format_option
@limit_option
def unknown(fmt: str, limit: int) -> None:
    """Points redeem requests whose effect is unknown and that no operator has resolved.

    Each waits for `recon resolve`: check the customer's points on the platform first.

    \b
    Examples:
      recon audit unknown
      recon audit unknown --format json
    """
    with audit_session() as session:
        rows = queries.unresolved_unknown_requests(session=session, limit=limit)
    show_rows(
        rows,
        queries.UNKNOWN_FIELDS,
        fmt,
        title="Points redeem requests waiting for an operator",
        empty="No unresolved unknown points redeem requests.",
        narrow=UNKNOWN_NARROW,
        limit=limit,
    )


@click.command()
@click.option(
    "--older-than-hours",
    type=click.IntRange(min=0),
    default=24,
    show_default=True,
    help="Only what has waited at least this long (events may arrive in any order).",
)
@format_option
@limit_option
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
    with audit_session() as session:
        rows = queries.unmatched_work(session=session, older_than=cutoff, limit=limit)
    show_rows(
        rows,
        queries.UNMATCHED_FIELDS,
        fmt,
        title=f"Unmatched for more than {older_than_hours} h",
        empty=f"Nothing unmatched for more than {older_than_hours} h.",
        narrow=UNMATCHED_NARROW,
        limit=limit,
    )


@click.command()
@window_options("Default: now; the window is the 24 hours before --until.")
@format_option
@limit_option
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
    with audit_session() as session:
        rows = queries.rejected_messages(session=session, since=since, until=until, limit=limit)
    window = describe_window(since, until)
    show_rows(
        rows,
        queries.REJECTED_FIELDS,
        fmt,
        title=f"Rejected intake messages{window}",
        empty=f"No rejected intake messages{window}.",
        narrow=REJECTED_NARROW,
        limit=limit,
    )


@click.command()
@window_options("Default: no limit.")
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
    with audit_session() as session:
        rows = (
            o.as_row() for o in queries.stream_outcomes(session=session, since=since, until=until)
        )
        count = render(rows, Outcome.AUDIT_FIELDS, fmt, out=output)
    click.echo(f"exported {count} outcomes{describe_window(since, until)}", err=True)


COMMANDS = (summary, failures, unknown, unmatched, rejected, export)
