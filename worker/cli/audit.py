"""`recon audit ...`: read the audit trail. Tables for people; JSON and CSV for scripts.

The lookups by key (bill, redemption, order, customer) are here; the reports over a window and
the lists of what waits are ``audit_reports.py``; what every command shares, ``audit_options.py``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

import click

from models.outcomes import KINDS, Outcome
from worker import audit as queries
from worker.audit.output import describe_window, resolve_window
from worker.cli import audit_reports
from worker.cli.audit_options import (
    audit_session,
    format_option,
    limit_option,
    show_outcomes,
    window_options,
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
    with audit_session() as session:
        rows = query(session=session, since=since, until=until, limit=limit, **criteria)
    window = describe_window(since, until)
    show_outcomes(
        rows,
        fmt,
        title=f"Outcomes of {what} {key}{window}",
        empty=f"No outcomes for {what} {key}{window}.",
        limit=limit,
    )


@audit.command()
@click.argument("bill_number")
@window_options("Default: no limit.")
@format_option
@limit_option
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
@window_options("Default: no limit.")
@format_option
@limit_option
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
@window_options("Default: no limit.")
@format_option
@limit_option
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
@window_options("Default: no limit.")
@format_option
@limit_option
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


def register(group: click.Group) -> None:
    for command in audit_reports.COMMANDS:
        audit.add_command(command)
    group.add_command(audit)
