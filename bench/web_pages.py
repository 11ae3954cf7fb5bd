"""How fast `recon web` answers each page on a million outcome rows (not a test).

    python -m bench.web_pages [--rows 1000000] [--runs 30]

Builds a throw-away PostgreSQL database with the migrations and loads it as
``bench/audit_lookups.py`` does (the same outcome rows, COPY), plus what the other pages read: one
bill per order, its redemptions, and an inbox with one rejected message in 200. Then it requests
every page through the WSGI app (Flask's test client: routing, queries, templates, no network)
``--runs`` times with varied keys and reports the median and p95 server-side time. The dead-letter
page reads a RabbitMQ vhost of its own holding 50 dead messages. Everything is dropped at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg
from kombu import Connection, Exchange, Producer

from bench.audit_lookups import DAYS, START, load
from tests import services
from worker.audit.output import render
from worker.ops import migrate
from worker.queues import DEAD_QUEUE
from worker.settings import load_settings
from worker.web import create_app

TARGET_MS = 100.0
DAY = dt.timedelta(days=1)
DEAD_MESSAGES = 50


def load_the_rest(url: str) -> dict[str, Any]:
    """Bills, redemptions and inbox rows that match the outcome rows' orders."""
    plain = url.replace("postgresql+psycopg://", "postgresql://", 1)
    started = time.perf_counter()
    with psycopg.connect(plain) as conn:
        orders = conn.execute("SELECT max(bill_id) FROM outcomes").fetchone()[0]
        step = DAYS * 86400 / orders
        buffers = {"transactions": io.StringIO(), "redemptions": io.StringIO()}
        for order in range(1, orders + 1):
            when = (START + dt.timedelta(seconds=order * step)).isoformat()
            customer = f"9198{order % 50_000:08d}"
            buffers["transactions"].write(
                f"evt-{order}\tORD-{order:07d}\tB-{order:07d}\t{order}\t42.50\tf\tmobile\t"
                f"{customer}\t{when}\t{when}\n"
            )
            buffers["redemptions"].write(
                f"coupon\t{order * 10}\tORD-{order:07d}\tmobile\t{customer}\tevt-{order}-0\t"
                f"{order}\tsucceeded\t1\t{when}\t{when}\n"
            )
        with conn.cursor().copy(
            "COPY transactions (event_id, order_ref, bill_number, bill_id, bill_amount, explicit,"
            " customer_type, customer_value, occurred_at, created_at) FROM STDIN"
        ) as copy:
            copy.write(buffers["transactions"].getvalue())
        with conn.cursor().copy(
            "COPY redemptions (kind, redemption_id, order_ref, customer_type, customer_value,"
            " event_id, transaction_id, state, attempts, created_at, updated_at) FROM STDIN"
        ) as copy:
            copy.write(buffers["redemptions"].getvalue())
        inbox = io.StringIO()
        for order in range(1, orders + 1):
            when = (START + dt.timedelta(seconds=order * step)).isoformat()
            rejected = order % 200 == 0
            status = "rejected" if rejected else "accepted"
            reason = "body is not JSON" if rejected else r"\N"
            inbox.write(
                f"k-{order}\tevt-{order}\t{status}\t{reason}\ttransaction.completed\t"
                f'{{"order_ref": "ORD-{order:07d}"}}\t{when}\n'
            )
        with conn.cursor().copy(
            "COPY inbox_events (dedup_key, event_id, status, reason, routing_key, raw_body,"
            " received_at) FROM STDIN"
        ) as copy:
            copy.write(inbox.getvalue())
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM (ANALYZE)")
    return {"orders": orders, "seconds": time.perf_counter() - started}


def fill_dead_letters(broker_url: str) -> None:
    with Connection(broker_url, transport_options={"confirm_publish": True}) as conn:
        DEAD_QUEUE(conn.default_channel).declare()
        producer = Producer(conn.default_channel)
        for n in range(DEAD_MESSAGES):
            producer.publish(
                f'{{"event_id": "dead-{n}", "type": "coupon.redeemed"}}'.encode(),
                exchange=Exchange("recon.dlx", type="fanout", durable=True),
                routing_key="",
                headers={"x-recon-reason": "bench", "x-recon-original-exchange": "orders",
                         "x-recon-original-routing-key": "coupon.redeemed"},
                content_type="application/json",
                content_encoding="utf-8",
            )  # fmt: skip


def time_page(client: Any, name: str, paths: list[str]) -> dict[str, Any]:
    client.get(paths[0])  # warm the connection pool and the template cache
    timings, statuses = [], set()
    for path in paths:
        started = time.perf_counter()
        answer = client.get(path, headers={"Accept": "text/html"})
        answer.get_data()
        timings.append((time.perf_counter() - started) * 1000)
        statuses.add(answer.status_code)
    timings.sort()
    p95 = timings[min(len(timings) - 1, round(0.95 * len(timings)) - 1)]
    median = statistics.median(timings)
    return {
        "page": name,
        "runs": len(paths),
        "status": ",".join(str(s) for s in sorted(statuses)),
        "median_ms": f"{median:.1f}",
        "p95_ms": f"{p95:.1f}",
        "under_100ms": "yes" if median < TARGET_MS else "NO",
        "example": paths[0],
    }


def run(rows: int, runs: int) -> None:
    url = services.create_database("recon_bench_web")
    broker_url, vhost = services.create_vhost("recon_bench_web")
    try:
        migrate.upgrade(url)
        seconds = load(url, rows)
        rest = load_the_rest(url)
        print(
            f"loaded {rows:,} outcome rows in {seconds:.1f} s; {rest['orders']:,} bills, "
            f"redemptions and inbox rows in {rest['seconds']:.1f} s"
        )
        fill_dead_letters(broker_url)
        settings = load_settings({"RECON_DATABASE_URL": url, "RECON_BROKER_URL": broker_url})
        client = create_app(settings).test_client()
        rng = random.Random(11)
        orders = [rng.randint(1, rest["orders"]) for _ in range(runs)]
        days = [START + dt.timedelta(days=rng.randint(1, DAYS - 2)) for _ in range(runs)]

        def window(day: dt.datetime, width: dt.timedelta = dt.timedelta(days=1)) -> str:
            return f"since={day.date().isoformat()}&until={(day + width).date().isoformat()}"

        customers = [f"9198{order % 50_000:08d}" for order in orders]
        end = START + dt.timedelta(days=DAYS)
        everything = f"since={START.date()}&until={end.date()}"
        pages: list[tuple[str, Callable[[int], str]]] = [
            ("search (a bill)", lambda i: f"/search?q=B-{orders[i]:07d}"),
            ("bill", lambda i: f"/bill?number=B-{orders[i]:07d}"),
            ("order", lambda i: f"/order?ref=ORD-{orders[i]:07d}"),
            ("redemption", lambda i: f"/redemption?id={orders[i] * 10}"),
            ("customer (31 days)", lambda i: f"/customer?value={customers[i]}&until={end.date()}"),
            ("summary (1 day)", lambda i: f"/summary?{window(days[i])}"),
            ("summary (2 days, the most)", lambda i: f"/summary?{window(days[i], 2 * DAY)}"),
            ("failures (31 days, the most)", lambda i: f"/failures?{everything}"),
            ("failures (1 day)", lambda i: f"/failures?{window(days[i])}"),
            ("unknown", lambda i: "/unknown"),
            ("unmatched", lambda i: "/unmatched"),
            ("rejected (1 day)", lambda i: f"/rejected?{window(days[i])}"),
            ("dead letters", lambda i: "/dead"),
            ("operator log", lambda i: "/operator-log"),
        ]  # fmt: skip
        results = [time_page(client, name, [make(i) for i in range(runs)]) for name, make in pages]
        fields = ("page", "runs", "status", "median_ms", "p95_ms", "under_100ms", "example")
        render(results, fields, "table", f"recon web pages on {rows:,} outcome rows")
    finally:
        services.delete_vhost(vhost)
        from models.session import engine_for

        engine_for(url).dispose()
        services.drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="outcome rows to load")
    parser.add_argument("--runs", type=int, default=30, help="requests per page")
    args = parser.parse_args()
    run(args.rows, args.runs)


if __name__ == "__main__":
    main()
