"""The pages, as the Blueprint ``audit``. Each view checks its parameters, runs bounded queries
and renders a template.

Parameters reach SQL only as bound values (SQLAlchemy expressions); Jinja escapes everything a
page shows. A bad parameter is a 400 page with one readable line (``worker.web.params``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, abort, current_app, redirect, render_template, url_for

from worker.web import chart, params, queries
from worker.web.queries import db

bp = Blueprint("audit", __name__)

#: The summary counts every row of its window (from the index alone, ~0.5 µs a row): two days
#: of a million-row month stay well under 100 ms; a longer summary is `recon audit summary`.
SUMMARY_MAX_WINDOW = dt.timedelta(days=2)
DEAD_LIMIT = 50
#: `unmatched` waits this long by default (events may arrive in any order).
UNMATCHED_HOURS = 24


@bp.get("/", endpoint="home")
@bp.get("/summary")
def summary() -> str:
    since, until = params.window("today", SUMMARY_MAX_WINDOW)
    rows = queries.count_outcomes(session=db(), since=since, until=until)
    return render_template(
        "summary.html",
        rows=rows,
        total=sum(row["count"] for row in rows),
        chart=chart.bars(rows),
        since=since,
        until=until,
        widest=SUMMARY_MAX_WINDOW.days,
    )


@bp.get("/search")
def search() -> Any:
    text = params.text_param("q", required=False)
    if not text:
        return render_template("search.html", q="", matches=None)
    matches = queries.search(db(), text)
    if matches.count == 1:
        if matches.orders:
            return redirect(url_for("audit.order", ref=matches.orders[0]))
        if matches.bills:
            return redirect(url_for("audit.bill", number=matches.bills[0]))
        if matches.redemptions:
            return redirect(url_for("audit.redemption", id=text))
        return redirect(url_for("audit.customer", value=text))
    return render_template("search.html", q=text, matches=matches)


@bp.get("/order")
def order() -> str:
    ref = params.text_param("ref")
    view = queries.order_view(db(), ref)
    outcomes = queries.outcomes_for_order(session=db(), order_ref=ref, limit=queries.TIMELINE_LIMIT)
    if view["bill"] is None and not view["redemptions"] and not view["requests"] and not outcomes:
        abort(404, f"no order {ref!r}")
    return render_template(
        "order.html", ref=ref, outcomes=outcomes, limit=queries.TIMELINE_LIMIT, **view
    )


@bp.get("/bill")
def bill() -> str:
    number = params.text_param("number")
    bills = queries.bills_named(db(), number)
    outcomes = queries.outcomes_for_bill(
        session=db(), bill_number=number, limit=queries.TIMELINE_LIMIT
    )
    if not bills and not outcomes:
        abort(404, f"no bill {number!r}")
    orders = [queries.order_view(db(), one.order_ref) | {"ref": one.order_ref} for one in bills]
    return render_template(
        "bill.html", number=number, orders=orders, outcomes=outcomes, limit=queries.TIMELINE_LIMIT
    )


@bp.get("/redemption")
def redemption() -> str:
    redemption_id = params.text_param("id")
    found = queries.redemptions_named(db(), redemption_id)
    outcomes = queries.outcomes_for_redemption(
        session=db(), redemption_id=redemption_id, limit=queries.TIMELINE_LIMIT
    )
    if not found and not outcomes:
        abort(404, f"no redemption {redemption_id!r}")
    rows = [
        {"redemption": item, "bill": queries.bill_by_id(db(), item.transaction_id)}
        for item in found
    ]
    return render_template(
        "redemption.html",
        redemption_id=redemption_id,
        rows=rows,
        outcomes=outcomes,
        limit=queries.TIMELINE_LIMIT,
    )


@bp.get("/customer")
def customer() -> str:
    value = params.text_param("value")
    since, until = params.window("max")
    size = params.size()
    outcomes = queries.outcomes_for_customer(
        session=db(), customer=value, since=since, until=until, limit=size,
        newest_first=True, before=params.before(),
    )  # fmt: skip
    return render_template(
        "customer.html",
        value=value,
        outcomes=outcomes,
        since=since,
        until=until,
        next_link=params.next_link(outcomes, size, (since, until)),
    )


@bp.get("/failures")
def failures() -> str:
    since, until = params.window("today")
    size = params.size()
    outcomes = queries.failed_outcomes(
        session=db(), since=since, until=until, limit=size, before=params.before()
    )
    return render_template(
        "failures.html",
        outcomes=outcomes,
        since=since,
        until=until,
        next_link=params.next_link(outcomes, size, (since, until)),
    )


@bp.get("/unknown")
def unknown() -> str:
    page, size = params.page(), params.size()
    # OFFSET is bounded: at most params.MAX_PAGES pages of a list that is short when ops keep up.
    rows = queries.unresolved_unknown_requests(session=db(), limit=size + 1, offset=page * size)
    return render_template(
        "unknown.html",
        rows=rows[:size],
        page=page,
        more=len(rows) > size and page + 1 < params.MAX_PAGES,
    )


@bp.get("/unmatched")
def unmatched() -> str:
    page, size = params.page(), params.size()
    hours = params.whole_number(
        "hours", default=UNMATCHED_HOURS, lowest=0, highest=24 * 365,
        what="hours is a whole number of hours, at most a year",
    )  # fmt: skip
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)
    rows = queries.unmatched_work(session=db(), older_than=cutoff, limit=(page + 1) * size + 1)
    shown = rows[page * size : (page + 1) * size]
    return render_template(
        "unmatched.html",
        rows=shown,
        page=page,
        hours=hours,
        more=len(rows) > (page + 1) * size and page + 1 < params.MAX_PAGES,
    )


@bp.get("/rejected")
def rejected() -> str:
    since, until = params.window("today")
    size = params.size()
    rows = queries.rejected_messages(
        session=db(), since=since, until=until, limit=size, before=params.before()
    )
    return render_template(
        "rejected.html",
        rows=rows,
        since=since,
        until=until,
        next_link=params.next_link(rows, size, (since, until), at="received_at"),
    )


@bp.get("/dead")
def dead() -> str:
    from kombu import Connection

    from worker.ops import deadletters

    settings = current_app.config["RECON_SETTINGS"]
    problem = None
    found: list[Any] = []
    try:
        with Connection(settings.broker_url, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=1)
            found = deadletters.peek(connection, limit=DEAD_LIMIT)
    except Exception as exc:
        # The broker's URL may hold a password: name the problem, never the URL.
        problem = f"cannot read the dead-letter queue: {type(exc).__name__}"
    return render_template("dead.html", rows=found, problem=problem, limit=DEAD_LIMIT)


@bp.get("/operator-log")
def operator_log() -> str:
    size = params.size()
    rows = queries.operator_log_page(db(), before=params.before(), size=size)
    return render_template("operator_log.html", rows=rows, next_link=params.next_link(rows, size))
