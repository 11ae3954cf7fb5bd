"""Gauges read from PostgreSQL on each scrape: open work, its age, unknown redeems, unmatched
redemptions; every query bounded and answered from an index."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import structlog
from sqlalchemy import (
    Connection,
    Engine,
    Select,
    and_,
    create_engine,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy.pool import NullPool

from models.redemptions import (
    GAVE_UP,
    IN_FLIGHT,
    OPEN_STATES,
    PENDING,
    RETRYING,
    UNKNOWN,
    PointsRedeemRequest,
    Redemption,
)
from models.session import normalise_url
from worker.settings import Settings

log = structlog.get_logger(__name__)

#: Open states of a points redeem request (in_flight: an attempt is under way, or was when its
#: process died).
REQUEST_OPEN_STATES = (PENDING, IN_FLIGHT, RETRYING, GAVE_UP)
#: A count stops here: past it the gauge means "at least this many" and the query stays bounded.
COUNT_CAP = 100_000
#: A scrape never waits longer than this for PostgreSQL.
STATEMENT_TIMEOUT_MS = 2000
REDEMPTION_KINDS = ("coupon", "points")


class DatabaseGauges:
    """A collector: open work, its age, unknown redeems and unmatched redemptions, from the
    database, each query bounded and index-only; a failure reports ``recon_db_gauges_up 0``
    and never fails the scrape."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._engine: Engine | None = None

    def describe(self) -> list[Any]:
        return []  # do not query the database when registered

    def _connect(self) -> Connection:
        if self._engine is None:
            # No pool: a pooled connection would be inherited by pool children forked later,
            # and one of them closing it would end the parent's session on the server.
            url = normalise_url(self._settings.database_url)
            self._engine = create_engine(url, poolclass=NullPool)
        return self._engine.connect()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        budget = GaugeMetricFamily(
            "recon_ratelimit_budget_per_minute",
            "The platform's request budget per minute (LOYALTY_RATE_LIMIT_PER_MINUTE).",
        )
        budget.add_metric([], self._settings.rate_limit_per_minute)
        yield budget
        started = time.perf_counter()
        try:
            with self._connect() as conn:
                readings = read_gauges(
                    conn,
                    now=dt.datetime.now(dt.UTC),
                    unmatched_after=dt.timedelta(seconds=self._settings.unmatched_after_seconds),
                )
        except Exception as exc:
            # Whatever went wrong, the scrape still answers (the counters matter more), and
            # recon_db_gauges_up says the gauges are missing.
            log.warning(
                "metrics.db_gauges_failed",
                error=type(exc).__name__,
                detail=str(getattr(exc, "orig", None) or exc).splitlines()[0][:200],
            )
            readings = None
        yield from _families(readings, GaugeMetricFamily)
        yield from how_the_read_went("db", "database", read=readings is not None, started=started)


def how_the_read_went(name: str, what: str, *, read: bool, started: float) -> Iterator[Any]:
    """``recon_<name>_gauges_up`` and ``_seconds``: whether this scrape read the ``what`` gauges,
    and how long it spent on them."""
    from prometheus_client.core import GaugeMetricFamily

    up = GaugeMetricFamily(
        f"recon_{name}_gauges_up", f"1 when the {what} gauges were read on this scrape, else 0."
    )
    up.add_metric([], 1 if read else 0)
    yield up
    took = GaugeMetricFamily(
        f"recon_{name}_gauges_seconds", f"Time this scrape spent reading the {what} gauges."
    )
    took.add_metric([], time.perf_counter() - started)
    yield took


def _families(readings: dict[str, Any] | None, family: Any) -> Iterator[Any]:
    if readings is None:
        return
    open_items = family(
        "recon_open_items",
        f"Work with its bill not yet done, by item and state (capped at {COUNT_CAP}).",
        labels=("item", "state"),
    )
    for (item, state), count in sorted(readings["open"].items()):
        open_items.add_metric([item, state], count)
    yield open_items
    oldest = family(
        "recon_oldest_open_item_age_seconds",
        "Age of the oldest open item (since it was recorded), by item; 0 when none is open.",
        labels=("item",),
    )
    for item, age in sorted(readings["oldest"].items()):
        oldest.add_metric([item], age)
    yield oldest
    unknown = family(
        "recon_unknown_redeems",
        "Points redeems whose effect is unknown, waiting for an operator (recon resolve).",
    )
    unknown.add_metric([], readings["unknown"])
    yield unknown
    unmatched = family(
        "recon_unmatched_redemptions",
        "Redemptions older than RECON_UNMATCHED_AFTER_SECONDS still without a bill, by kind.",
        labels=("kind",),
    )
    for kind, count in sorted(readings["unmatched"].items()):
        unmatched.add_metric([kind], count)
    yield unmatched


def read_gauges(
    conn: Connection, *, now: dt.datetime, unmatched_after: dt.timedelta
) -> dict[str, Any]:
    """Every gauge in one short read-only transaction; each query walks one index and stops at
    the first row or at ``COUNT_CAP`` rows."""
    with conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SET TRANSACTION READ ONLY"))
            conn.execute(text(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}"))
        billed = Redemption.transaction_id.is_not(None)
        open_counts: dict[tuple[str, str], int] = {}
        oldest: dict[str, float] = {"redemption": 0.0, "redeem_request": 0.0}
        for state in OPEN_STATES:
            where = and_(Redemption.state == state, billed)
            open_counts["redemption", state] = _capped_count(conn, Redemption, where)
            first = conn.execute(select(func.min(Redemption.created_at)).where(where)).scalar()
            oldest["redemption"] = max(oldest["redemption"], _age(first, now))
        request = PointsRedeemRequest
        for state in REQUEST_OPEN_STATES:
            where = request.state == state
            open_counts["redeem_request", state] = _capped_count(conn, request, where)
            first = conn.execute(select(func.min(request.created_at)).where(where)).scalar()
            oldest["redeem_request"] = max(oldest["redeem_request"], _age(first, now))
        unknown = _capped_count(conn, request, request.state == UNKNOWN)
        before = now - unmatched_after
        unmatched = {
            kind: _capped_count(
                conn,
                Redemption,
                and_(
                    Redemption.kind == kind,
                    Redemption.transaction_id.is_(None),
                    Redemption.created_at < before,
                ),
            )
            for kind in REDEMPTION_KINDS
        }
    return {"open": open_counts, "oldest": oldest, "unknown": unknown, "unmatched": unmatched}


def _capped_count(conn: Connection, table: Any, where: Any) -> int:
    # Selecting a constant, not a column, lets PostgreSQL answer from the index alone.
    rows: Select[Any] = select(literal_column("1")).select_from(table).where(where).limit(COUNT_CAP)
    bounded = rows.subquery()
    return int(conn.execute(select(func.count()).select_from(bounded)).scalar() or 0)


def _age(when: dt.datetime | None, now: dt.datetime) -> float:
    if when is None:
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max((now - when).total_seconds(), 0.0)
