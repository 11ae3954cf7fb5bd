"""How fast the audit lookups answer on a million outcome rows (not a test).

    python -m bench.audit_lookups [--rows 1000000]

Creates a throw-away PostgreSQL database (the tests' server, ``RECON_TEST_PG_URL``), builds it
with the migrations, loads outcome rows with COPY (~4.4 per order: ~230k bills and orders, ~50k
customers, 30 days in time order, mixed kinds, statuses and codes), runs VACUUM ANALYZE, then
times the very query functions ``recon audit`` calls: 50 random keys per lookup (median and
p95), and ``summary`` / ``failures`` over one day (10 days). The plan column shows the index each
one uses. The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import random
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from models.session import build_engine
from tests import services
from worker import audit
from worker.audit.output import render
from worker.ops import migrate

DAYS = 30
KEYS_PER_LOOKUP = 50
TARGET_MS = 50.0
#: 1-4 redemptions per order (2.5) times 1-3 attempts each (1.75 with the weights below).
ROWS_PER_ORDER = 2.5 * 1.75
START = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
FAILURE_CODES = (510, 748, 749, 750, 801, 878, 1212, 1219, 8015)
COLUMNS = (
    "at", "kind", "redemption_id", "order_ref", "bill_number", "bill_id", "bill_amount",
    "customer", "attempt", "http_status", "code", "message", "status", "event_id", "request_id",
    "request_excerpt", "response_excerpt",
)  # fmt: skip


def generate(rows: int, rng: random.Random) -> Iterator[tuple[Any, ...]]:
    """Outcome rows, order by order: each order's redemptions, each tried 1-3 times."""
    customers = [f"9198{n:08d}" for n in range(50_000)]
    # Orders start evenly over the days, so rows come out in (nearly) time order, as an
    # append-only table holds them; a day's rows then sit together on disk, as in production.
    step = DAYS * 86400 / (rows / ROWS_PER_ORDER)
    order = 0
    made = 0
    while made < rows:
        order += 1
        order_ref, bill = f"ORD-{order:07d}", f"B-{order:07d}"
        customer = rng.choice(customers)
        when = START + dt.timedelta(seconds=order * step)
        amount = f"{rng.uniform(1, 500):.2f}"
        for item in range(rng.randint(1, 4)):
            kind = rng.choices(("coupon", "points", "points_redeem"), (55, 37, 8))[0]
            redemption = f"{order * 10 + item}" if kind == "coupon" else f"P{order:07d}{item}"
            attempts = rng.choices((1, 2, 3), (45, 35, 20))[0]
            for attempt in range(1, attempts + 1):
                when += dt.timedelta(seconds=rng.uniform(1, 600))
                status, code, http = _result(rng, kind, last=attempt == attempts)
                yield (
                    when.isoformat(), kind, redemption, order_ref, bill, order, amount,
                    customer, attempt, http, code, f"{status} ({code})", status,
                    f"evt-{order}-{item}", f"{rng.getrandbits(64):016x}",
                    '{"redemptions": [{"redemptionId": "..."}]}', '{"entity": {"status": {}}}',
                )  # fmt: skip
                made += 1
                if made >= rows:
                    return


def _result(rng: random.Random, kind: str, *, last: bool) -> tuple[str, int | None, int | None]:
    if not last:
        return "retrying", rng.choice((None, 461, 521)), rng.choice((503, 504, 200))
    status = rng.choices(
        ("succeeded", "failed", "gave_up", "unknown", "skipped"), (86, 8, 3, 1, 2)
    )[0]
    if status == "succeeded":
        return status, {"coupon": 761, "points": None, "points_redeem": 800}[kind], 200
    if status == "failed":
        return status, rng.choice(FAILURE_CODES), 200
    return status, None, None if status == "skipped" else 503


def load(url: str, rows: int) -> float:
    """COPY the rows in; return the seconds it took (VACUUM ANALYZE included)."""
    started = time.perf_counter()
    rng = random.Random(20261121)
    plain_url = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain_url) as conn:
        with conn.cursor().copy(f"COPY outcomes ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            buffer = io.StringIO()
            for n, row in enumerate(generate(rows, rng), 1):
                buffer.write("\t".join(r"\N" if v is None else str(v) for v in row) + "\n")
                if n % 50_000 == 0:
                    copy.write(buffer.getvalue())
                    buffer = io.StringIO()
            copy.write(buffer.getvalue())
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM (ANALYZE) outcomes")
    return time.perf_counter() - started


@contextmanager
def last_statement(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    """Collects (SQL, parameters) of every statement run on ``engine`` in the block."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def plan_of(engine: Engine, statement: str, parameters: Any) -> str:
    """The plan's top node, and the index it reaches (the node that reads the table)."""
    with engine.connect() as conn:
        raw = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters).scalar()
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    top = plan["Node Type"]
    node, indexes = plan, []
    stack = [node]
    while stack:
        node = stack.pop()
        if "Index Name" in node:
            indexes.append(f"{node['Node Type']} on {node['Index Name']}")
        stack.extend(node.get("Plans", []))
    return f"{top} <- {indexes[0]}" if indexes else f"{top} (no index!)"


def measure(
    engine: Engine, name: str, keys: list[Any], call: Callable[[Session, Any], list[Any]]
) -> dict[str, Any]:
    timings, sizes = [], []
    with Session(engine) as session:
        call(session, keys[0])  # warm the connection and the statement cache
        with last_statement(engine) as seen:
            for key in keys:
                started = time.perf_counter()
                sizes.append(len(call(session, key)))
                timings.append((time.perf_counter() - started) * 1000)
    timings.sort()
    p95 = timings[min(len(timings) - 1, round(0.95 * len(timings)) - 1)]
    return {
        "lookup": name,
        "runs": len(keys),
        "median_ms": f"{statistics.median(timings):.2f}",
        "p95_ms": f"{p95:.2f}",
        "rows_avg": f"{statistics.mean(sizes):.1f}",
        "under_50ms": "yes" if p95 < TARGET_MS else "NO",
        "plan": plan_of(engine, *seen[-1]),
    }


def sample(engine: Engine, column: str, rng: random.Random) -> list[str]:
    with engine.connect() as conn:
        values = conn.exec_driver_sql(
            f"SELECT {column} FROM outcomes TABLESAMPLE SYSTEM (1) LIMIT 5000"
        ).scalars()
        pool = sorted(set(values))
    return rng.sample(pool, KEYS_PER_LOOKUP)


#: name, outcomes column its keys come from, query function, its key argument.
KEY_LOOKUPS = (
    ("bill", "bill_number", audit.outcomes_for_bill, "bill_number"),
    ("redemption", "redemption_id", audit.outcomes_for_redemption, "redemption_id"),
    ("order", "order_ref", audit.outcomes_for_order, "order_ref"),
    ("customer", "customer", audit.outcomes_for_customer, "customer"),
)
LIMIT = 1000  # the CLI's default --limit
ONE_DAY = dt.timedelta(days=1)


def by_key(lookup: Callable[..., list[Any]], keyword: str) -> Callable[[Session, Any], list[Any]]:
    return lambda session, key: lookup(session=session, limit=LIMIT, **{keyword: key})


def summary_of_day(session: Session, day: dt.datetime) -> list[Any]:
    return audit.count_outcomes(session=session, since=day, until=day + ONE_DAY)


def failures_of_day(session: Session, day: dt.datetime) -> list[Any]:
    return audit.failed_outcomes(session=session, since=day, until=day + ONE_DAY, limit=LIMIT)


def run(rows: int) -> None:
    url = services.create_database("recon_bench")
    engine: Engine | None = None
    try:
        migrate.upgrade(url)
        seconds = load(url, rows)
        print(f"loaded {rows:,} outcome rows in {seconds:.1f} s (COPY + VACUUM ANALYZE)")
        engine = build_engine(url)
        rng = random.Random(7)
        days = [START + dt.timedelta(days=d) for d in rng.sample(range(1, DAYS - 1), 10)]
        results = [
            measure(engine, name, sample(engine, column, rng), by_key(lookup, keyword))
            for name, column, lookup, keyword in KEY_LOOKUPS
        ]
        results += [
            measure(engine, "summary (1 day)", days, summary_of_day),
            measure(engine, "failures (1 day)", days, failures_of_day),
        ]
        fields = ("lookup", "runs", "median_ms", "p95_ms", "rows_avg", "under_50ms", "plan")
        render(results, fields, "table", f"Audit lookups on {rows:,} outcome rows")
    finally:
        if engine is not None:
            engine.dispose()
        services.drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="outcome rows to load")
    run(parser.parse_args().rows)


if __name__ == "__main__":
    main()
