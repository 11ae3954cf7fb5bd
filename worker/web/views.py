"""The pages. Each view checks its parameters, runs bounded queries and renders a template.

Parameters reach SQL only as bound values (SQLAlchemy expressions); Jinja escapes everything a
page shows. A bad parameter is a 400 page with one readable line.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Flask, abort, current_app, redirect, render_template, request, url_for
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from worker import audit
from worker.audit.open_work import unmatched_work
from worker.audit.output import UTC_DATETIME
from worker.web import auth, chart, queries
from worker.web.app import close_session, db

#: The widest window a list may ask for: a careless click must not scan a year of outcomes.
MAX_WINDOW = dt.timedelta(days=31)
#: The summary counts every row of its window (from the index alone, ~0.5 µs a row): two days
#: of a million-row month stay well under 100 ms; a longer summary is `recon audit summary`.
SUMMARY_MAX_WINDOW = dt.timedelta(days=2)
PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
#: Lists without a keyset (unknown, unmatched) page by number, up to this page.
MAX_PAGES = 20
DEAD_LIMIT = 50
#: `unmatched` waits this long by default (events may arrive in any order).
UNMATCHED_HOURS = 24


class BadParameter(ValueError):
    """A query parameter the page cannot use; its text is shown to the user."""


def register(app: Flask) -> None:
    app.teardown_request(close_session)
    app.register_error_handler(BadParameter, _bad_parameter)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(SQLAlchemyError, _database_error)
    for rule, view, methods in (
        ("/", summary, ["GET"]),
        ("/summary", summary, ["GET"]),
        ("/search", search, ["GET"]),
        ("/order", order, ["GET"]),
        ("/bill", bill, ["GET"]),
        ("/redemption", redemption, ["GET"]),
        ("/customer", customer, ["GET"]),
        ("/failures", failures, ["GET"]),
        ("/unknown", unknown, ["GET"]),
        ("/unmatched", unmatched, ["GET"]),
        ("/rejected", rejected, ["GET"]),
        ("/dead", dead, ["GET"]),
        ("/operator-log", operator_log, ["GET"]),
        ("/login", login, ["GET", "POST"]),
        ("/logout", logout, ["POST"]),
    ):
        app.add_url_rule(rule, view.__name__ if rule != "/" else "home", view, methods=methods)


# --- parameters -------------------------------------------------------------------------------


def _text_param(name: str, *, required: bool = True, max_length: int = 128) -> str:
    value = (request.args.get(name) or "").strip()
    if required and not value:
        raise BadParameter(f"give {name}")
    if len(value) > max_length:
        raise BadParameter(f"{name} is longer than {max_length} characters")
    return value


def _window(
    default: str = "today", widest: dt.timedelta = MAX_WINDOW
) -> tuple[dt.datetime, dt.datetime]:
    """``since``/``until`` from the query (ISO 8601, naive = UTC); at most ``widest`` apart."""
    now = dt.datetime.now(dt.UTC)
    since = _time_param("since")
    until = _time_param("until")
    if until is None:
        until = now
    if since is None:
        if default == "today":
            since = until.replace(hour=0, minute=0, second=0, microsecond=0)
            if since == until:
                since -= dt.timedelta(days=1)
        else:
            since = until - widest
    if since >= until:
        raise BadParameter("since must be earlier than until")
    if until - since > widest:
        raise BadParameter(f"the window is wider than {widest.days} days: narrow it")
    return since, until


def _time_param(name: str) -> dt.datetime | None:
    raw = (request.args.get(name) or "").strip()
    if not raw:
        return None
    if len(raw) > 40:
        raise BadParameter(f"{name} is not a date or date-time")
    try:
        return UTC_DATETIME.convert(raw, None, None)
    except Exception:
        raise BadParameter(
            f"{name} is not an ISO 8601 date or date-time (e.g. 2026-11-21 or 2026-11-21T08:30)"
        ) from None


def _size() -> int:
    raw = request.args.get("size") or str(PAGE_SIZE)
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise BadParameter(f"size is a number from 1 to {MAX_PAGE_SIZE}")
    return int(raw)


def _page() -> int:
    raw = request.args.get("page") or "0"
    if not raw.isdigit() or int(raw) >= MAX_PAGES:
        raise BadParameter(f"page is a number from 0 to {MAX_PAGES - 1}")
    return int(raw)


def _before() -> tuple[dt.datetime, int] | None:
    """The keyset cursor ``<ISO time>_<id>`` of the last row of the previous page."""
    raw = (request.args.get("before") or "").strip()
    if not raw:
        return None
    when, _, row_id = raw.rpartition("_")
    try:
        at = dt.datetime.fromisoformat(when)
    except ValueError:
        raise BadParameter("before is not a page cursor") from None
    if not row_id.isdigit() or at.tzinfo is None:
        raise BadParameter("before is not a page cursor")
    return at, int(row_id)


def _cursor(at: dt.datetime, row_id: int) -> str:
    return f"{at.astimezone(dt.UTC).isoformat()}_{row_id}"


def _next_link(
    rows: list[Any], size: int, window: tuple[dt.datetime, dt.datetime], at: str = "at"
) -> str | None:
    """The next page's link; the window is pinned so that "today" does not move under it."""
    if len(rows) < size:
        return None
    last = rows[-1]
    when = last[at] if isinstance(last, dict) else getattr(last, at)
    row_id = last["id"] if isinstance(last, dict) else last.id
    args: dict[str, Any] = {
        **request.args.to_dict(),
        "since": window[0].isoformat(),
        "until": window[1].isoformat(),
        "before": _cursor(when, row_id),
    }
    return url_for(request.endpoint or "home", **args)


# --- pages ------------------------------------------------------------------------------------


def summary() -> str:
    since, until = _window("today", SUMMARY_MAX_WINDOW)
    rows = audit.count_outcomes(session=db(), since=since, until=until)
    return render_template(
        "summary.html",
        rows=rows,
        total=sum(row["count"] for row in rows),
        chart=chart.bars(rows),
        since=since,
        until=until,
        widest=SUMMARY_MAX_WINDOW.days,
    )


def search() -> Any:
    text = _text_param("q", required=False)
    if not text:
        return render_template("search.html", q="", matches=None)
    matches = queries.search(db(), text)
    if matches.count == 1:
        if matches.orders:
            return redirect(url_for("order", ref=matches.orders[0]))
        if matches.bills:
            return redirect(url_for("bill", number=matches.bills[0]))
        if matches.redemptions:
            return redirect(url_for("redemption", id=text))
        return redirect(url_for("customer", value=text))
    return render_template("search.html", q=text, matches=matches)


def order() -> str:
    ref = _text_param("ref")
    view = queries.order_view(db(), ref)
    outcomes = audit.outcomes_for_order(session=db(), order_ref=ref, limit=queries.TIMELINE_LIMIT)
    if view["bill"] is None and not view["redemptions"] and not view["requests"] and not outcomes:
        abort(404, f"no order {ref!r}")
    return render_template(
        "order.html", ref=ref, outcomes=outcomes, limit=queries.TIMELINE_LIMIT, **view
    )


def bill() -> str:
    number = _text_param("number")
    bills = queries.bills_named(db(), number)
    outcomes = audit.outcomes_for_bill(
        session=db(), bill_number=number, limit=queries.TIMELINE_LIMIT
    )
    if not bills and not outcomes:
        abort(404, f"no bill {number!r}")
    orders = [queries.order_view(db(), one.order_ref) | {"ref": one.order_ref} for one in bills]
    return render_template(
        "bill.html", number=number, orders=orders, outcomes=outcomes, limit=queries.TIMELINE_LIMIT
    )


def redemption() -> str:
    redemption_id = _text_param("id")
    found = queries.redemptions_named(db(), redemption_id)
    outcomes = audit.outcomes_for_redemption(
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


def customer() -> str:
    value = _text_param("value")
    since, until = _window("max")
    size = _size()
    outcomes = queries.customer_page(
        db(), customer=value, since=since, until=until, before=_before(), size=size
    )
    return render_template(
        "customer.html",
        value=value,
        outcomes=outcomes,
        since=since,
        until=until,
        next_link=_next_link(outcomes, size, (since, until)),
    )


def failures() -> str:
    since, until = _window("today")
    size = _size()
    outcomes = queries.failures_page(db(), since=since, until=until, before=_before(), size=size)
    return render_template(
        "failures.html",
        outcomes=outcomes,
        since=since,
        until=until,
        next_link=_next_link(outcomes, size, (since, until)),
    )


def unknown() -> str:
    page, size = _page(), _size()
    # OFFSET is bounded: at most MAX_PAGES pages of a list that is short when ops keep up.
    rows = queries.unknown_page(db(), offset=page * size, size=size + 1)
    return render_template(
        "unknown.html",
        rows=rows[:size],
        page=page,
        more=len(rows) > size and page + 1 < MAX_PAGES,
    )


def unmatched() -> str:
    page, size = _page(), _size()
    raw = request.args.get("hours") or str(UNMATCHED_HOURS)
    if not raw.isdigit() or int(raw) > 24 * 365:
        raise BadParameter("hours is a whole number of hours, at most a year")
    hours = int(raw)
    cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)
    rows = unmatched_work(session=db(), older_than=cutoff, limit=(page + 1) * size + 1)
    shown = rows[page * size : (page + 1) * size]
    return render_template(
        "unmatched.html",
        rows=shown,
        page=page,
        hours=hours,
        more=len(rows) > (page + 1) * size and page + 1 < MAX_PAGES,
    )


def rejected() -> str:
    since, until = _window("today")
    size = _size()
    rows = audit.rejected_messages(
        session=db(), since=since, until=until, limit=size, before=_before()
    )
    return render_template(
        "rejected.html",
        rows=rows,
        since=since,
        until=until,
        next_link=_next_link(rows, size, (since, until), at="received_at"),
    )


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


def operator_log() -> str:
    size = _size()
    rows = queries.operator_log_page(db(), before=_before(), size=size)
    if len(rows) < size:
        next_link = None
    else:
        last = rows[-1]
        args: dict[str, Any] = {**request.args.to_dict(), "before": _cursor(last.at, last.id)}
        next_link = url_for("operator_log", **args)
    return render_template("operator_log.html", rows=rows, next_link=next_link)


def login() -> Any:
    token = current_app.config["RECON_TOKEN"]
    target = request.values.get("next") or url_for("home")
    if not target.startswith("/") or target.startswith(("//", "/\\")):
        target = url_for("home")  # only our own pages: no open redirect
    if request.method == "GET":
        return render_template("login.html", next=target, failed=False, needed=bool(token))
    given = request.form.get("token", "")
    if not token or not auth.token_matches(given, token):
        return render_template("login.html", next=target, failed=True, needed=bool(token)), 401
    response = redirect(target)
    response.set_cookie(
        auth.COOKIE,
        auth.cookie_value(token),
        httponly=True,
        samesite="Strict",
        secure=request.is_secure,
    )
    return response


def logout() -> Any:
    response = redirect(url_for("login"))
    response.delete_cookie(auth.COOKIE)
    return response


def _bad_parameter(exc: BadParameter) -> tuple[str, int]:
    return render_template("error.html", status=400, message=str(exc)), 400


def _database_error(exc: SQLAlchemyError) -> tuple[str, int]:
    # One line for the reader, the details in the log; never the URL (it may hold a password).
    current_app.logger.error("web.database_error: %s", type(exc).__name__)
    problem = type(getattr(exc, "orig", None) or exc).__name__
    message = f"cannot query the database ({problem}): is it up, and migrated (`recon migrate`)?"
    return render_template("error.html", status=503, message=message), 503


def _http_error(exc: HTTPException) -> tuple[str, int]:
    status = exc.code or 500
    return render_template("error.html", status=status, message=exc.description), status
