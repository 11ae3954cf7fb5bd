"""What people and scripts are shown: rows as a table, JSON, JSON lines or CSV; UTC times.

``render(rows, fields, fmt, title)`` is the one way a command prints rows: ``table`` is a rich
table for people; ``json`` a JSON array, ``jsonl`` one JSON object per line and ``csv`` a header
and rows, for scripts. The machine formats are written row by row, so a generator of rows is
streamed, never held in memory. Times are written as UTC ISO 8601.

A table written to a file or a pipe has no trailing spaces, and is as wide as its rows unless
``COLUMNS`` is set: then it folds to that width like a terminal of that width would.

``UTC_DATETIME`` is the click type for ``--since`` / ``--until``: an ISO 8601 date or date-time,
naive meaning UTC; ``resolve_window`` checks a pair (exit 2 when since is not before until) and
``describe_window`` words it for a title.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, TextIO

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from worker.observe.masking import printable

FORMATS = ("table", "json", "csv")
STREAM_FORMATS = ("csv", "jsonl")
FREE_TEXT = frozenset(
    {"message", "last_message", "request_excerpt", "response_excerpt", "reason", "excerpt"}
)
TIMES = frozenset(
    {"at", "recorded_at", "last_outcome_at", "created_at", "updated_at", "received_at"}
)
WIDE = 10_000


def plain(value: Any) -> Any:
    """A JSON-ready value: exact decimals as text, times as UTC ISO 8601."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


WIDE_META = "recon.wide"


def _remember_wide(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    ctx.meta[WIDE_META] = value
    return value


#: ``--wide`` for any command that renders a table: every column, even on a narrow terminal.
wide_option = click.option(
    "--wide",
    is_flag=True,
    expose_value=False,
    callback=_remember_wide,
    help="Table with every column (on a terminal the table shows the main ones, folded to fit).",
)


def _wide_requested() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx and ctx.meta.get(WIDE_META))


def render(
    rows: Iterable[Mapping[str, Any]],
    fields: Sequence[str],
    fmt: str,
    title: str | None = None,
    *,
    empty: str = "Nothing found.",
    out: TextIO | None = None,
    narrow: Sequence[str] | None = None,
) -> int:
    """Write ``rows`` (only ``fields``, in that order) to ``out``; return how many were written.

    ``narrow``: the columns a table shows on a terminal unless ``--wide`` was given, so an
    80-column terminal stays readable; piped tables and the machine formats have them all.
    """
    stream = out if out is not None else sys.stdout
    if fmt == "table":
        return _table(rows, fields, title, empty, stream, narrow)
    if fmt == "json":
        return _json_array(rows, fields, stream)
    if fmt == "jsonl":
        return _json_lines(rows, fields, stream)
    if fmt == "csv":
        return _csv(rows, fields, stream)
    raise ValueError(f"unknown output format {fmt!r}")


def _project(row: Mapping[str, Any], fields: Sequence[str]) -> dict[str, Any]:
    return {name: plain(row.get(name)) for name in fields}


def _table(
    rows: Iterable[Mapping[str, Any]],
    fields: Sequence[str],
    title: str | None,
    empty: str,
    stream: TextIO,
    narrow: Sequence[str] | None = None,
) -> int:
    console = Console(file=stream, highlight=False)
    shown = list(fields)
    caption = None
    # Piped to a file or a pager: as wide as the rows need, never folded, unless COLUMNS names a
    # width (rich reads it), which is then honoured as a terminal's would be.
    width_given = _columns() is not None
    if not console.is_terminal and not width_given:
        console.width = WIDE
    elif narrow and not _wide_requested():
        shown = [name for name in fields if name in narrow]
        hidden = len(fields) - len(shown)
        caption = f"{hidden} more columns with --wide, or --format json|csv"
    table = Table(
        title=title,
        title_justify="left",
        caption=caption,
        caption_justify="left",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for name in shown:
        # Every cell folds rather than being cut: an id or a code split over two lines is
        # still whole, where an ellipsis would mislead. Free text gets the spare width.
        # A time stays on one line (20 characters, to the second).
        free, time = name in FREE_TEXT, name in TIMES
        table.add_column(
            name,
            overflow="fold",
            no_wrap=time,
            min_width=20 if time else None if free else min(len(name), 8),
        )
    count = 0
    for row in rows:
        # Text, not markup: a value holding "[/x]" or "[link=...]" is shown as it is, and
        # cannot restyle the table or crash it (rich raises on an unmatched closing tag); and
        # escaped: an order reference or a platform's message may hold terminal control codes.
        table.add_row(*(Text(printable(_cell(row.get(name)))) for name in shown))
        count += 1
    if not count:
        console.print(empty, markup=False)
    elif console.is_terminal:
        console.print(table)
    else:
        # Rich pads every cell to its column's width; a file gets the lines without that padding.
        with console.capture() as captured:
            console.print(table)
        stream.writelines(line.rstrip() + "\n" for line in captured.get().splitlines())
    return count


def _columns() -> int | None:
    value = os.environ.get("COLUMNS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        # People read seconds; scripts (json, csv) get the full precision.
        return utc_text(value)
    return str(plain(value))


def _json_array(rows: Iterable[Mapping[str, Any]], fields: Sequence[str], stream: TextIO) -> int:
    count = 0
    for row in rows:
        stream.write("[\n  " if count == 0 else ",\n  ")
        stream.write(json.dumps(_project(row, fields), ensure_ascii=False))
        count += 1
    stream.write("[]\n" if count == 0 else "\n]\n")
    return count


def _json_lines(rows: Iterable[Mapping[str, Any]], fields: Sequence[str], stream: TextIO) -> int:
    count = 0
    for row in rows:
        stream.write(json.dumps(_project(row, fields), ensure_ascii=False) + "\n")
        count += 1
    return count


def _csv(rows: Iterable[Mapping[str, Any]], fields: Sequence[str], stream: TextIO) -> int:
    writer = csv.DictWriter(stream, fieldnames=list(fields), lineterminator="\n")
    writer.writeheader()
    count = 0
    for row in rows:
        writer.writerow(_project(row, fields))
        count += 1
    return count


class UTCDateTimeParam(click.ParamType):
    """An ISO 8601 date (midnight UTC) or date-time; without an offset it is read as UTC."""

    name = "datetime"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> dt.datetime:
        if isinstance(value, dt.datetime):
            parsed = value
        else:
            text = str(value).strip()
            try:
                if len(text) == 10:
                    parsed = dt.datetime.combine(dt.date.fromisoformat(text), dt.time())
                else:
                    parsed = dt.datetime.fromisoformat(text)
            except ValueError:
                self.fail(
                    f"{text!r} is not an ISO 8601 date or date-time "
                    "(examples: 2026-11-21, 2026-11-21T08:30, 2026-11-21T08:30:00+01:00)",
                    param,
                    ctx,
                )
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=dt.UTC)
        return parsed.astimezone(dt.UTC)


UTC_DATETIME = UTCDateTimeParam()


def resolve_window(
    since: dt.datetime | None, until: dt.datetime | None, *, default: dt.timedelta | None = None
) -> tuple[dt.datetime | None, dt.datetime | None]:
    """Check a --since/--until pair; with ``default``, an open window becomes that long."""
    if default is not None:
        until = until or dt.datetime.now(dt.UTC)
        since = since or until - default
    if since is not None and until is not None and since >= until:
        raise click.UsageError(
            f"--since ({since.isoformat()}) must be earlier than --until ({until.isoformat()})"
        )
    return since, until


def describe_window(since: dt.datetime | None, until: dt.datetime | None) -> str:
    """ " from <since> to <until>" for a title, or "" for an unbounded window."""
    if since is None and until is None:
        return ""
    start = utc_text(since) if since else "the beginning"
    end = utc_text(until) if until else "now"
    return f" from {start} to {end}"


def utc_text(when: dt.datetime) -> str:
    """A time for people: UTC ISO 8601 to the second."""
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
