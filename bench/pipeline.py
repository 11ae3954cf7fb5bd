"""Phase 1: the real pipeline end to end, RabbitMQ -> intake -> PostgreSQL -> tasks -> sandbox.

Figures: reconciled items per second (first publish to last outcome row), API calls per item
(counted at the sandbox), publish-to-outcome latency per order (p50/p95), peak RSS per worker
process (main and pool, sampled with psutil), and where the CPU went.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from bench import infra
from bench.load import publish, register_with_sandbox, scenario
from models.session import build_engine

#: The limiter still runs its database statement per request, but never binds in this phase:
#: the sandbox has no limit either (the rate-limit phase measures the limit).
UNBINDING_RATE_LIMIT = 10_000_000
FINAL = "('succeeded', 'failed', 'gave_up', 'unknown', 'skipped')"


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[rank]


def _scalar(engine: Engine, sql: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql)).scalar()


def _epoch(value: dt.datetime) -> float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def wait_for_outcomes(engine: Engine, expected: int, timeout: float) -> int:
    """Poll until every redemption with a bill has reached a final state; return how many did."""
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline:
        done = int(
            _scalar(
                engine,
                f"SELECT count(*) FROM redemptions WHERE state IN {FINAL} "
                "AND transaction_id IS NOT NULL",
            )
            or 0
        )
        if done >= expected:
            return done
        time.sleep(0.5)
    return done


def run(
    sandbox: infra.SandboxProcess,
    *,
    orders: int,
    coupons_per_bill: int,
    workers: int,
    concurrency: int,
    log_dir: Path,
    timeout: float,
) -> dict[str, Any]:
    traffic = scenario(orders, coupons_per_bill=coupons_per_bill, prefix="bench", seed=11)
    backend = infra.Backend.create("recon_bench")
    engine = build_engine(backend.database_url, pool_size=1, max_overflow=1)
    pool = None
    try:
        sandbox.reset(rate_limit_per_minute=0)
        register_with_sandbox(traffic, sandbox.url)
        pool = infra.Workers(
            backend,
            sandbox,
            count=workers,
            concurrency=concurrency,
            rate_limit_per_minute=UNBINDING_RATE_LIMIT,
            name="bench",
            log_dir=log_dir,
        )
        cpu_before = infra.system_cpu_seconds()
        sandbox_cpu_before = sandbox.cpu_seconds()
        workers_cpu_before = pool.cpu_seconds()
        print(
            f"  publishing {len(traffic.events):,} events ({orders:,} orders, "
            f"{traffic.items:,} items) to {workers} worker(s) x -c {concurrency} ...",
            flush=True,
        )
        publication = publish(backend.broker_url, infra.EVENTS_EXCHANGE, traffic)
        print(
            f"  published in {publication.seconds:.1f} s; waiting for outcomes ...",
            flush=True,
        )
        done = wait_for_outcomes(engine, traffic.items, timeout)
        waited = time.time() - publication.started
        cpu_after = infra.system_cpu_seconds()
        sandbox_cpu = sandbox.cpu_seconds() - sandbox_cpu_before
        workers_cpu = pool.cpu_seconds() - workers_cpu_before
        alive = pool.alive()
        pool.stop()
        memory = pool.memory.report()
        pool = None
        stats = sandbox.stats()
        result = _figures(engine, traffic, publication, stats, done)
        busy = cpu_after["busy"] - cpu_before["busy"]
        idle = cpu_after["idle"] - cpu_before["idle"]
        result.update(
            timed_out=done < traffic.items,
            waited_s=round(waited, 1),
            workers=workers,
            concurrency=concurrency,
            workers_alive_at_end=alive,
            memory=memory,
            peak_rss_mb=max((row["peak_rss_mb"] for row in memory), default=0.0),
            cpu={
                "machine_busy_share": round(busy / max(busy + idle, 1e-9), 3),
                "machine_busy_s": round(busy, 1),
                "workers_s": round(workers_cpu, 1),
                "sandbox_s": round(sandbox_cpu, 1),
                "other_s (postgres, rabbitmq, bench)": round(busy - workers_cpu - sandbox_cpu, 1),
            },
        )
        return result
    finally:
        if pool is not None:
            pool.stop()
        engine.dispose()
        backend.close()


def _figures(
    engine: Engine,
    traffic: Any,
    publication: Any,
    stats: dict[str, Any],
    done: int,
) -> dict[str, Any]:
    with engine.connect() as conn:
        by_status = dict(
            conn.execute(
                text(
                    "SELECT kind || '/' || status || '/' || coalesce(code::text, '-'), count(*) "
                    "FROM outcomes GROUP BY 1 ORDER BY 1"
                )
            ).all()
        )
        items_succeeded = int(
            conn.execute(
                text(
                    "SELECT count(*) FROM outcomes "
                    "WHERE status = 'succeeded' AND redemption_id IS NOT NULL"
                )
            ).scalar()
            or 0
        )
        last_outcome = conn.execute(text("SELECT max(at) FROM outcomes")).scalar()
        per_order = conn.execute(
            text("SELECT order_ref, max(at) FROM outcomes GROUP BY order_ref")
        ).all()
        bill_received = dict(
            conn.execute(
                text(
                    "SELECT order_ref, received_at FROM inbox_events "
                    "WHERE type = 'transaction.completed'"
                )
            ).all()
        )
        last_received = conn.execute(text("SELECT max(received_at) FROM inbox_events")).scalar()

    first = publication.started
    end = _epoch(last_outcome) if last_outcome else time.time()
    span = max(end - first, 1e-9)
    latencies, queue_waits, after_intake = [], [], []
    for order_ref, at in per_order:
        published = publication.bill_published_at.get(order_ref)
        if published is None:
            continue
        latencies.append(_epoch(at) - published)
        received = bill_received.get(order_ref)
        if received is not None:
            queue_waits.append(_epoch(received) - published)
            after_intake.append(_epoch(at) - _epoch(received))

    by_endpoint = stats.get("by_endpoint", {})
    coupon_calls = sum(n for name, n in by_endpoint.items() if "coupon" in name)
    points_calls = sum(n for name, n in by_endpoint.items() if "points" in name)
    calls = int(stats.get("total", 0))
    intake_span = (_epoch(last_received) - first) if last_received else float("nan")
    return {
        "orders": len(traffic.orders),
        "coupons_per_bill": traffic.coupon_items // max(len(traffic.orders), 1),
        "messages": publication.messages,
        "items": traffic.items,
        "coupon_items": traffic.coupon_items,
        "points_items": traffic.points_items,
        "items_final": done,
        "items_succeeded": items_succeeded,
        "outcomes": by_status,
        "publish_s": round(publication.seconds, 2),
        "span_s": round(span, 2),
        "items_per_s": round(items_succeeded / span, 1),
        "orders_per_s": round(len(per_order) / span, 1),
        "intake_msgs_per_s": round(publication.messages / intake_span, 1)
        if intake_span == intake_span and intake_span > 0
        else None,
        "api_calls": calls,
        "api_by_endpoint": by_endpoint,
        "api_by_status": stats.get("by_status", {}),
        "api_calls_per_item": round(calls / max(items_succeeded, 1), 4),
        "api_calls_per_coupon_item": round(coupon_calls / max(traffic.coupon_items, 1), 4),
        "api_calls_per_points_item": round(points_calls / max(traffic.points_items, 1), 4),
        "latency_s": {
            "p50": round(percentile(latencies, 0.50), 3),
            "p95": round(percentile(latencies, 0.95), 3),
            "max": round(max(latencies), 3) if latencies else None,
            "mean": round(statistics.fmean(latencies), 3) if latencies else None,
        },
        "latency_parts_p50_s": {
            "publish_to_bill_stored": round(percentile(queue_waits, 0.50), 3),
            "bill_stored_to_last_outcome": round(percentile(after_intake, 0.50), 3),
        },
        "latency_parts_p95_s": {
            "publish_to_bill_stored": round(percentile(queue_waits, 0.95), 3),
            "bill_stored_to_last_outcome": round(percentile(after_intake, 0.95), 3),
        },
    }
