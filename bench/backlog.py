"""The backlog phase (issue 14): a queue full of events, as after an outage, with no budget bound.

N orders (k = 2: two coupons, one points redemption and the bill, so 4 N messages and 3 N items)
are published while no worker runs. Then, in one run:

* **the intake's floor**: a bare consumer (kombu, psycopg) takes the same bodies from a queue of
  its own in batches of 250, stores each batch in one transaction and acknowledges it with one
  ``multiple`` ack after the commit; measured with a multi-row ``INSERT ... ON CONFLICT DO
  NOTHING`` and with ``COPY`` into a staging table (the faster is the floor);
* **the pipeline**: ``recon worker`` processes start on the backlog; seconds from the first
  event stored to the last stored, and to the last item reconciled; peak RSS per process; CPU;
* **the calls' floor**: the same API calls by a bare ``requests`` loop (bench/floor.py).

``scaling`` runs the pipeline part alone for several worker counts and pool sizes.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from kombu import Connection, Consumer, Exchange, Queue
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine, text

from bench import floor, infra
from bench.load import scenario
from bench.pipeline import FINAL, UNBINDING_RATE_LIMIT
from models.session import build_engine
from worker.intake.consumer import events_queue_for
from worker.settings import load_settings
from worker.tools.publishing import dumps, publish_bodies

COUPONS = 2  # 4 messages and 3 items an order
FLOOR_BATCH = 250
METHODS = ("insert", "copy")
TARGET_INTAKE, TARGET_PIPELINE, TARGET_RSS_MB = 0.50, 0.40, 120.0
FLOOR_TABLE = "CREATE TABLE bench_floor (dedup_key text PRIMARY KEY, body bytea NOT NULL)"
STAGE = "CREATE TEMP TABLE IF NOT EXISTS stage (k text, b bytea) ON COMMIT DELETE ROWS"
INSERT = "INSERT INTO bench_floor (dedup_key, body) VALUES (%s, %s) ON CONFLICT DO NOTHING"


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _declare(backend: infra.Backend, floors: tuple[str, ...]) -> None:
    """The product's events queue, and one plain queue per floor method bound to the same
    exchange: one publication fills them all with the same bodies."""
    settings = load_settings({"RECON_BROKER_URL": backend.broker_url})
    exchange = Exchange(infra.EVENTS_EXCHANGE, type="topic", durable=True)
    with Connection(backend.broker_url) as conn:
        channel = conn.channel()
        events_queue_for(settings)(channel).declare()
        for method in floors:
            Queue(f"bench.floor.{method}", exchange, routing_key="#", durable=True)(
                channel
            ).declare()


def _store(conn: psycopg.Connection, method: str, rows: list[tuple[str, bytes]]) -> None:
    with conn.cursor() as cur:
        if method == "insert":
            cur.executemany(INSERT, rows)
        else:
            cur.execute(STAGE)
            with cur.copy("COPY stage (k, b) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute("INSERT INTO bench_floor SELECT k, b FROM stage ON CONFLICT DO NOTHING")
    conn.commit()


def intake_floor(backend: infra.Backend, method: str, expected: int) -> dict[str, Any]:
    """The bare consumer: batches of 250, one transaction and one ack each."""
    pending: list[Any] = []
    done, started, cpu = 0, 0.0, time.process_time()
    database = psycopg.connect(_plain(backend.database_url))
    with database as db, Connection(backend.broker_url) as amqp:
        db.execute("DROP TABLE IF EXISTS bench_floor")
        db.execute(FLOOR_TABLE)
        db.commit()
        channel = amqp.channel()
        channel.auto_decode = False  # the bytes as they came, as the intake keeps them
        queue = Queue(f"bench.floor.{method}", no_declare=True)
        with Consumer(channel, [queue], on_message=pending.append, prefetch_count=2 * FLOOR_BATCH):
            while done < expected:
                with contextlib.suppress(TimeoutError):
                    amqp.drain_events(timeout=0.02)
                if not started and pending:
                    started = time.perf_counter()
                if len(pending) >= FLOOR_BATCH or (pending and done + len(pending) >= expected):
                    rows = [(json.loads(m.body)["event_id"], bytes(m.body)) for m in pending]
                    _store(db, method, rows)
                    pending[-1].ack(multiple=True)
                    done += len(pending)
                    pending.clear()
    seconds = time.perf_counter() - started
    return {
        "method": method,
        "messages": done,
        "seconds": round(seconds, 2),
        "msgs_per_s": round(done / seconds, 1),
        "consumer_cpu_ms_per_msg": round(1000 * (time.process_time() - cpu) / done, 3),
    }


def _progress_counts(engine: Engine) -> tuple[int, int, Any, Any, Any]:
    with engine.connect() as conn:
        stored, first, last = conn.execute(
            text("SELECT count(*), min(received_at), max(received_at) FROM inbox_events")
        ).one()
        final, done_at = conn.execute(
            text(f"SELECT count(*) FILTER (WHERE state IN {FINAL}), now() FROM redemptions")
        ).one()
    return int(stored), int(final), first, last, done_at


def pipeline(
    backend: infra.Backend,
    sandbox: infra.SandboxProcess,
    *,
    messages: int,
    items: int,
    workers: int,
    concurrency: int,
    log_dir: Path,
    timeout: float,
) -> dict[str, Any]:
    """Start the workers on the stored-up backlog; wait (with a progress line) until done."""
    engine = build_engine(backend.database_url)
    pool = infra.Workers(
        backend,
        sandbox,
        count=workers,
        concurrency=concurrency,
        rate_limit_per_minute=UNBINDING_RATE_LIMIT,
        name=f"backlog{workers}x{concurrency}",
        log_dir=log_dir,
    )
    roles_before = pool.cpu_by_role()
    ours = {*pool.pids(), sandbox.proc.pid}
    programs_before = infra.cpu_by_program(ours)
    stored_at = reconciled_at = None
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    try:
        with Progress(*columns, TimeElapsedColumn(), transient=True) as progress:
            stored_bar = progress.add_task("  stored    ", total=messages)
            done_bar = progress.add_task("  reconciled", total=items)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                stored, final, first, last, now = _progress_counts(engine)
                progress.update(stored_bar, completed=stored)
                progress.update(done_bar, completed=final)
                if stored >= messages and stored_at is None:
                    stored_at = (first, last)
                if final >= items:
                    reconciled_at = now
                    break
                time.sleep(1.0)
        roles_after = pool.cpu_by_role()
        programs_after = infra.cpu_by_program(ours)
        with engine.connect() as conn:
            last_outcome = conn.execute(text("SELECT max(at) FROM outcomes")).scalar()
    finally:
        pool.stop()
        engine.dispose()
    if stored_at is None or reconciled_at is None:
        raise TimeoutError(f"the backlog was not done within {timeout:.0f} s")
    first, last = stored_at
    stored_s = (last - first).total_seconds()
    reconciled_s = ((last_outcome or reconciled_at) - first).total_seconds()
    main_cpu = roles_after["main"] - roles_before["main"]
    pool_cpu = roles_after["pool"] - roles_before["pool"]
    others = infra.cpu_spent(programs_before, programs_after)
    return {
        "workers": workers,
        "concurrency": concurrency,
        "messages": messages,
        "items": items,
        "stored_s": round(stored_s, 2),
        "intake_msgs_per_s": round(messages / max(stored_s, 1e-9), 1),
        "reconciled_s": round(reconciled_s, 2),
        "items_per_s": round(items / max(reconciled_s, 1e-9), 1),
        "intake_cpu_ms_per_msg": round(1000 * main_cpu / messages, 3),
        "pool_cpu_ms_per_item": round(1000 * pool_cpu / items, 3),
        "worker_cpu_ms_per_item": round(1000 * (main_cpu + pool_cpu) / items, 3),
        "postgres_cpu_ms_per_item": round(1000 * others["postgres"] / items, 3),
        "rabbitmq_cpu_ms_per_item": round(1000 * others["rabbitmq"] / items, 3),
        "peak_rss": pool.memory.report(),
    }


def queue_backlog(
    sandbox: infra.SandboxProcess, orders: int, floors: tuple[str, ...]
) -> tuple[infra.Backend, Any]:
    """A fresh database and vhost with every event queued (and copied to the floors' queues)."""
    traffic = scenario(orders, coupons_per_bill=COUPONS, prefix="bench", seed=14)
    sandbox.reset(rate_limit_per_minute=0)
    floor.register_with_sandbox(traffic, sandbox.url)
    backend = infra.Backend.create("recon_backlog")
    try:
        _declare(backend, floors)
        with Connection(backend.broker_url, connect_timeout=10) as conn:
            publish_bodies(conn, infra.EVENTS_EXCHANGE, (dumps(e) for e in traffic.events))
        # Every message is in the events queue before any worker starts: a message missing
        # from the inbox at the end was then lost after the broker had it, not on the way in.
        infra.wait_until(
            "the events queue to hold every message",
            lambda: (backend.queue_state(infra.EVENTS_QUEUE) or (0, 0))[0] >= len(traffic.events),
            timeout=60,
            every=0.5,
        )
    except BaseException:
        backend.close()
        raise
    return backend, traffic


def run(
    sandbox: infra.SandboxProcess,
    *,
    orders: int,
    workers: int,
    concurrency: int,
    log_dir: Path,
    timeout: float,
) -> dict[str, Any]:
    print(f"  queueing {orders:,} orders ({4 * orders:,} messages) ...", flush=True)
    backend, traffic = queue_backlog(sandbox, orders, METHODS)
    messages = len(traffic.events)
    try:
        floors = [intake_floor(backend, method, messages) for method in METHODS]
        for one in floors:
            print(f"  intake floor ({one['method']}): {one['msgs_per_s']:,.0f} msgs/s", flush=True)
        result = pipeline(
            backend,
            sandbox,
            messages=messages,
            items=traffic.items,
            workers=workers,
            concurrency=concurrency,
            log_dir=log_dir,
            timeout=timeout,
        )
    finally:
        backend.close()
    calls = floor.measure(sandbox, traffic, 1)
    intake_floor_rate = max(one["msgs_per_s"] for one in floors)
    # The floors in items per second: the intake's (3 items per 4 messages) and the calls'.
    slower_floor = min(intake_floor_rate * traffic.items / messages, calls["items_per_s"])
    return {
        **result,
        "orders": orders,
        "intake_floors": floors,
        "intake_floor_msgs_per_s": intake_floor_rate,
        "intake_share_of_floor": round(result["intake_msgs_per_s"] / intake_floor_rate, 3),
        "calls_floor_items_per_s": calls["items_per_s"],
        "slower_floor_items_per_s": round(slower_floor, 1),
        "pipeline_share_of_floor": round(result["items_per_s"] / slower_floor, 3),
        "max_peak_rss_mb": max(row["peak_rss_mb"] for row in result["peak_rss"]),
        "targets": {
            "intake_share_of_floor": TARGET_INTAKE,
            "pipeline_share_of_floor": TARGET_PIPELINE,
            "max_peak_rss_mb": TARGET_RSS_MB,
        },
    }


def verdict_rows(result: dict[str, Any], row: Callable[[str, str, str, bool | None], None]) -> None:
    """The phase's figures next to its targets, for the benchmark's final table."""
    share, pipe = result["intake_share_of_floor"], result["pipeline_share_of_floor"]
    stored = f"{result['stored_s']:.1f} s, {result['intake_msgs_per_s']:,.0f}/s"
    row(f"backlog: {result['messages']:,} messages stored", stored, "", None)
    row(
        "  intake / its floor (bare batched consumer)",
        f"{share:.1%} of {result['intake_floor_msgs_per_s']:,.0f}/s",
        f">= {TARGET_INTAKE:.0%}",
        share >= TARGET_INTAKE,
    )
    reconciled = f"{result['reconciled_s']:.1f} s, {result['items_per_s']:,.0f}/s"
    row(f"backlog: {result['items']:,} items reconciled", reconciled, "", None)
    row(
        "  pipeline / the slower floor (intake, calls)",
        f"{pipe:.1%} of {result['slower_floor_items_per_s']:,.0f}/s",
        f">= {TARGET_PIPELINE:.0%}",
        pipe >= TARGET_PIPELINE,
    )
    row(
        "backlog: worker CPU per item (intake per message)",
        f"{result['worker_cpu_ms_per_item']:.2f} ms ({result['intake_cpu_ms_per_msg']:.2f} ms)",
        "",
        None,
    )
    row(
        "backlog: peak RSS of any worker process",
        f"{result['max_peak_rss_mb']:.0f} MB",
        f"< {TARGET_RSS_MB:.0f} MB",
        result["max_peak_rss_mb"] < TARGET_RSS_MB,
    )
