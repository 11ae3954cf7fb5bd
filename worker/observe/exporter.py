"""Serving /metrics: a fresh multiprocess directory per worker, the HTTP server, and gauges
read from PostgreSQL on each scrape.

A `recon worker` is one main process (the intake) and a prefork pool whose children run the
tasks. Each writes its counters to files of its own in ``PROMETHEUS_MULTIPROC_DIR``; the main
process sums them when scraped. The directory must be new for each worker instance (several run
on one host, and a restarted worker must not add its predecessor's totals to its own), and it must
be set before ``prometheus_client`` is imported by any process of the worker, which is why
``worker/observe/metrics.py`` imports it lazily and ``start_for_worker`` runs before Celery forks.
"""

from __future__ import annotations

import atexit
import datetime as dt
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
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
from worker.observe import discovery
from worker.observe.broker_gauges import BrokerGauges
from worker.observe.discovery import alive
from worker.settings import Settings, SettingsError

log = structlog.get_logger(__name__)

DIR_PREFIX = "recon-metrics-"
_DIR_NAME = re.compile(rf"^{DIR_PREFIX}(\d+)-")
#: Open states of a points redeem request (in_flight: an attempt is under way, or was when its
#: process died).
REQUEST_OPEN_STATES = (PENDING, IN_FLIGHT, RETRYING, GAVE_UP)
#: A count stops here: past it the gauge means "at least this many" and the query stays bounded.
COUNT_CAP = 100_000
#: A scrape never waits longer than this for PostgreSQL.
STATEMENT_TIMEOUT_MS = 2000
REDEMPTION_KINDS = ("coupon", "points")


# --- the multiprocess directory ----------------------------------------------------------------


def fresh_directory(base: str = "") -> Path:
    """A new, empty directory for this worker's metric files, named after its pid; directories
    left by workers that died without cleaning up are removed first."""
    root = Path(base) if base else Path(tempfile.gettempdir())
    try:
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_directories(root)
        return Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-", dir=root))
    except OSError as exc:
        raise SettingsError(
            f"RECON_METRICS_DIR: cannot make a metrics directory in {root}: "
            f"{exc.strerror or type(exc).__name__}"
        ) from None


def remove_stale_directories(root: Path) -> list[Path]:
    """Remove our directories whose worker process is gone; another live worker's stay."""
    removed = []
    for path in root.iterdir():
        match = _DIR_NAME.match(path.name)
        if match is None or not path.is_dir() or alive(int(match.group(1))):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def use_directory(path: Path) -> None:
    """Point prometheus_client (in this process and every child forked after) at ``path``."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        # Imported before the directory was known (by some other module): values created from
        # now on must still go to the files. Ours are created lazily, so all of them do.
        values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]


def _remove_on_exit(path: Path) -> None:
    owner = os.getpid()

    def remove() -> None:
        # Forked children inherit atexit handlers; only the worker's main process cleans up.
        if os.getpid() == owner:
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)


def _mark_child_dead(**_: Any) -> None:
    from prometheus_client import multiprocess

    # Counters of a dead child stay (they are history); its live gauges, if any, must go.
    multiprocess.mark_process_dead(os.getpid())


_FILE_PID = re.compile(r"_(\d+)\.db$")


def mark_dead_processes(directory: Path) -> list[int]:
    """``mark_process_dead`` for every process with files here that is gone, including pool
    children killed without a chance to say so (SIGKILL, out of memory)."""
    from prometheus_client import multiprocess

    pids = set()
    for path in directory.glob("*.db"):
        match = _FILE_PID.search(path.name)
        if match is not None:
            pids.add(int(match.group(1)))
    dead = sorted(pid for pid in pids if not alive(pid))
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(directory))
    return dead


class _PoolCollector:
    """The multiprocess collector, after tidying up behind dead processes."""

    def __init__(self, directory: Path) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self._directory = directory
        self._collector = MultiProcessCollector(None, path=str(directory))

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        mark_dead_processes(self._directory)
        return self._collector.collect()


# --- serving -------------------------------------------------------------------------------------


def start_for_worker(settings: Settings) -> Any | None:
    """Serve /metrics for a `recon worker` (main process and pool children), if a port is set."""
    if settings.metrics_port is None:
        return None
    from celery import signals

    directory = fresh_directory(settings.metrics_dir)
    use_directory(directory)
    _remove_on_exit(directory)
    signals.worker_process_shutdown.connect(_mark_child_dead, weak=False)

    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(_PoolCollector(directory))
    _register_gauges(registry, settings)
    return _serve(settings, registry, role="worker", directory=directory)


def start_for_beat(settings: Settings) -> Any | None:
    """Serve the database gauges from `recon beat`, if a port is set (beat counts nothing)."""
    if settings.metrics_port is None:
        return None
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    _register_gauges(registry, settings)
    return _serve(settings, registry, role="beat", directory=None)


def _register_gauges(registry: Any, settings: Settings) -> None:
    registry.register(DatabaseGauges(settings))
    if settings.broker_url.startswith(("amqp", "pyamqp")):
        registry.register(BrokerGauges(settings))


def _serve(settings: Settings, registry: Any, *, role: str, directory: Path | None) -> Any:
    from prometheus_client import start_http_server

    host, port = settings.metrics_host, settings.metrics_port
    assert port is not None
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise SettingsError(
            f"RECON_METRICS_PORT: cannot serve /metrics on {host}:{port}: {reason} "
            "(each recon worker on a host needs a port of its own)"
        ) from None
    endpoint = discovery.announce(
        role=role, host=host, port=server.server_port, metrics_dir=settings.metrics_dir
    )
    log.info(
        "metrics.serving",
        role=role,
        host=host,
        port=server.server_port,
        url=endpoint.url,
        target_file=str(endpoint.target_file),
        directory=str(directory) if directory else None,
    )
    return server


# --- gauges read from PostgreSQL on each scrape -------------------------------------------------


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
        up = GaugeMetricFamily(
            "recon_db_gauges_up", "1 when the database gauges were read on this scrape, else 0."
        )
        up.add_metric([], 1 if readings is not None else 0)
        yield up
        took = GaugeMetricFamily(
            "recon_db_gauges_seconds", "Time this scrape spent reading the database gauges."
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
