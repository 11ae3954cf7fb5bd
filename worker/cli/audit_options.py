"""What every `recon audit` command shares: its options, its database session, and how it shows
outcomes (through ``worker.audit.output``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import click
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from models.outcomes import Outcome
from models.session import engine_for, shown_url, unit_of_work
from worker.audit.output import FORMATS, UTC_DATETIME, render, wide_option
from worker.settings import load_settings

#: The columns a person reads in a terminal; scripts get every field of Outcome.AUDIT_FIELDS.
OUTCOME_TABLE_FIELDS = (
    "at", "kind", "redemption_id", "order_ref", "bill_number", "attempt", "status", "code",
    "http_status", "message", "request_id",
)  # fmt: skip
# What an 80-column terminal shows; --wide (or json/csv) has the rest.
OUTCOME_NARROW = ("at", "redemption_id", "status", "code", "message")
DEFAULT_LIMIT = 1000
LAST_DAY = dt.timedelta(hours=24)

Command = Callable[..., Any]


def format_option(command: Command) -> Command:
    command = wide_option(command)
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="table for people; json (an array of rows) or csv (with a header) for scripts.",
    )(command)


def limit_option(command: Command) -> Command:
    return click.option(
        "--limit",
        type=click.IntRange(min=1),
        default=DEFAULT_LIMIT,
        show_default=True,
        help="Show at most this many rows (a note on stderr says when more were left out).",
    )(command)


def window_options(default: str) -> Callable[[Command], Command]:
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
def audit_session() -> Iterator[Session]:
    url = load_settings().database_url
    try:
        with unit_of_work(engine_for(url)) as session:
            yield session
    except OperationalError as exc:
        where = shown_url(url)
        reason = str(exc.orig).strip().splitlines()[0]
        raise click.ClickException(f"cannot query the database at {where}: {reason}") from exc


def show_outcomes(
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
    note_if_cut(len(outcomes), limit)


def show_rows(
    rows: Sequence[Mapping[str, Any]],
    fields: Sequence[str],
    fmt: str,
    *,
    title: str,
    empty: str,
    narrow: Sequence[str],
    limit: int,
) -> None:
    """A list a query returned: the main columns on a terminal, and a note if it was cut."""
    render(rows, fields, fmt, title, empty=empty, narrow=narrow)
    note_if_cut(len(rows), limit)


def note_if_cut(count: int, limit: int | None) -> None:
    if limit is not None and count >= limit:
        click.echo(
            f"(showing the first {limit} rows; there may be more: narrow --since/--until "
            "or raise --limit)",
            err=True,
        )
