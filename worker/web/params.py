"""The pages' query parameters: each is checked before any query runs, and a bad one is a
`BadParameter` whose one-line text the 400 page shows.

Numbers are ASCII digits only: ``str.isdigit`` says yes to ``²`` and ``٣``, which ``int()``
then refuses (or reads as another number), so a pattern decides, not ``isdigit``.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from flask import request, url_for

from worker.cli.output import UTC_DATETIME

#: The widest window a list may ask for: a careless click must not scan a year of outcomes.
MAX_WINDOW = dt.timedelta(days=31)
PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
#: Lists without a keyset (unknown, unmatched) page by number, up to this page.
MAX_PAGES = 20
#: A whole number as people type it in a URL; longer ones are no count this page could use.
WHOLE_NUMBER = re.compile(r"[0-9]{1,19}")
#: C0 controls and DEL: no identifier holds one (the intake refuses NUL), and PostgreSQL
#: refuses NUL in text, so they are a parameter error here rather than a database error later.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")

Cursor = tuple[dt.datetime, int]


class BadParameter(ValueError):
    """A query parameter the page cannot use; its text is shown to the user."""


def text_param(name: str, *, required: bool = True, max_length: int = 128) -> str:
    value = (request.args.get(name) or "").strip()
    if required and not value:
        raise BadParameter(f"give {name}")
    if len(value) > max_length:
        raise BadParameter(f"{name} is longer than {max_length} characters")
    if CONTROL.search(value):
        raise BadParameter(f"{name} holds a control character")
    return value


def whole_number(name: str, *, default: int, lowest: int, highest: int, what: str = "") -> int:
    raw = (request.args.get(name) or "").strip() or str(default)
    if not WHOLE_NUMBER.fullmatch(raw) or not lowest <= int(raw) <= highest:
        raise BadParameter(what or f"{name} is a whole number from {lowest} to {highest}")
    return int(raw)


def size() -> int:
    return whole_number("size", default=PAGE_SIZE, lowest=1, highest=MAX_PAGE_SIZE)


def page() -> int:
    return whole_number("page", default=0, lowest=0, highest=MAX_PAGES - 1)


def window(
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


def before() -> Cursor | None:
    """The keyset cursor ``<ISO time>_<id>`` of the last row of the previous page."""
    raw = (request.args.get("before") or "").strip()
    if not raw:
        return None
    when, _, row_id = raw.rpartition("_")
    if len(when) > 40 or not WHOLE_NUMBER.fullmatch(row_id):
        raise BadParameter("before is not a page cursor")
    try:
        at = dt.datetime.fromisoformat(when)
    except ValueError:
        raise BadParameter("before is not a page cursor") from None
    if at.tzinfo is None or int(row_id) >= 2**63:  # ids are BIGINT
        raise BadParameter("before is not a page cursor")
    return at, int(row_id)


def cursor(at: dt.datetime, row_id: int) -> str:
    return f"{at.astimezone(dt.UTC).isoformat()}_{row_id}"


def next_link(
    rows: list[Any],
    size: int,
    window: tuple[dt.datetime, dt.datetime] | None = None,
    at: str = "at",
) -> str | None:
    """The next page's link; the window is pinned so that "today" does not move under it."""
    if len(rows) < size:
        return None
    last = rows[-1]
    when = last[at] if isinstance(last, dict) else getattr(last, at)
    row_id = last["id"] if isinstance(last, dict) else last.id
    args: dict[str, Any] = {**request.args.to_dict(), "before": cursor(when, row_id)}
    if window is not None:
        args |= {"since": window[0].isoformat(), "until": window[1].isoformat()}
    return url_for(request.endpoint or "audit.home", **args)
