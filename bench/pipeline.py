"""Phase 1: the real pipeline end to end, RabbitMQ -> intake -> PostgreSQL -> tasks -> sandbox.

Two runs on the same workers:

* **burst**: every event of N orders published at once (as fast as kombu sends them). Figures:
  reconciled items per second (first publish to last outcome row), API calls per item (counted
  at the sandbox), publish-to-outcome latency per order (p50/p95; under a burst it is mostly
  time spent queued behind the other orders), and where the CPU went.
* **paced**: a shorter stream published at a steady rate (half the burst's order rate), for the
  latency an order sees when the pipeline keeps up.

Peak RSS per worker process (each main and pool process) is sampled with psutil all along.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from bench import infra, round_trips
from bench.load import Publication, Scenario, publish, register_with_sandbox, scenario
from models.session import build_engine

#: The limiter still runs its database statement per request, but never binds in this phase:
#: the sandbox has no limit either (the rate-limit phase measures the limit).
UNBINDING_RATE_LIMIT = 100_000  # the most the setting allows; about 30 x what phase 1 sends
FINAL = "('succeeded', 'failed', 'gave_up', 'unknown', 'skipped')"


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[rank]


def _epoch(value: dt.datetime) -> float:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def wait_for_outcomes(engine: Engine, prefix: str, messages: int, timeout: float) -> dict[str, int]:
    """Poll until every event is stored and every redemption linked to its bill has reached a
    final state. A redemption the intake never linked to its bill (a lost match) stays pending
    without a task forever: it is counted apart, as ``unmatched``, instead of waited for."""
    deadline = time.monotonic() + timeout
    state: dict[str, int] = {}
    like = {"like": f"{prefix}-%"}
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM inbox_events WHERE order_ref LIKE :like), "
                    f"count(*) FILTER (WHERE state IN {FINAL}), "
                    f"count(*) FILTER (WHERE state NOT IN {FINAL} AND transaction_id IS NOT NULL),"
                    " count(*) FILTER (WHERE transaction_id IS NULL) "
                    "FROM redemptions WHERE order_ref LIKE :like"
                ),
                like,
            ).one()
        state = {"stored": row[0], "final": row[1], "open": row[2], "unmatched": row[3]}
        if state["stored"] >= messages and state["open"] == 0:
            break
        time.sleep(0.5)
    state["timed_out"] = int(state.get("stored", 0) < messages or state.get("open", 1) > 0)
    return state


def latencies(engine: Engine, prefix: str, publication: Publication) -> dict[str, Any]:
    """Per order: bill published -> last outcome row; split at the moment the bill was stored."""
    like = {"like": f"{prefix}-%"}
    with engine.connect() as conn:
        per_order = conn.execute(
            text(
                "SELECT order_ref, max(at) FROM outcomes WHERE order_ref LIKE :like "
                "GROUP BY order_ref"
            ),
            like,
        ).all()
        bill_stored: dict[str, dt.datetime] = dict(
            conn.execute(
                text(
                    "SELECT order_ref, received_at FROM inbox_events "
                    "WHERE type = 'transaction.completed' AND order_ref LIKE :like"
                ),
                like,
            ).all()
        )
    total, queued, after = [], [], []
    for order_ref, at in per_order:
        published = publication.bill_published_at.get(order_ref)
        if published is None:
            continue
        total.append(_epoch(at) - published)
        stored = bill_stored.get(order_ref)
        if stored is not None:
            queued.append(_epoch(stored) - published)
            after.append(_epoch(at) - _epoch(stored))

    def summary(values: list[float]) -> dict[str, float | None]:
        return {
            "p50": round(percentile(values, 0.50), 3),
            "p95": round(percentile(values, 0.95), 3),
            "max": round(max(values), 3) if values else None,
            "mean": round(statistics.fmean(values), 3) if values else None,
        }

    return {
        "orders_with_outcomes": len(per_order),
        "latency_s": summary(total),
        "publish_to_bill_stored_s": summary(queued),
        "bill_stored_to_last_outcome_s": summary(after),
    }


def _outcome_counts(engine: Engine, prefix: str) -> tuple[dict[str, int], dict[str, Any]]:
    like = {"like": f"{prefix}-%"}
    with engine.connect() as conn:
        by_status = {
            str(key): int(n)
            for key, n in conn.execute(
                text(
                    "SELECT kind || '/' || status || '/' || coalesce(code::text, '-'), count(*) "
                    "FROM outcomes WHERE order_ref LIKE :like GROUP BY 1 ORDER BY 1"
                ),
                like,
            ).all()
        }
        row = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE kind = 'coupon'), "
                "count(*) FILTER (WHERE kind = 'points'), max(at), "
                "count(DISTINCT order_ref) FILTER (WHERE kind = 'coupon') FROM outcomes "
                "WHERE status = 'succeeded' AND redemption_id IS NOT NULL "
                "AND order_ref LIKE :like"
            ),
            like,
        ).one()
        last_stored = conn.execute(
            text("SELECT max(received_at) FROM inbox_events WHERE order_ref LIKE :like"), like
        ).scalar()
    return by_status, {
        "coupon": int(row[0]),
        "points": int(row[1]),
        "last_outcome": row[2],
        "coupon_bills": int(row[3]),
        "last_stored": last_stored,
    }


def table_scans(engine: Engine) -> dict[str, dict[str, int]]:
    """Sequential vs index scans per table: a sequential scan on a hot path shows up here."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0), n_live_tup "
                "FROM pg_stat_user_tables ORDER BY relname"
            )
        ).all()
    return {
        str(name): {"seq_scan": seq, "seq_tup_read": read, "idx_scan": idx, "rows": live}
        for name, seq, read, idx, live in rows
    }


def timeline(engine: Engine, prefix: str, start: float, step: float = 5.0) -> list[list[int]]:
    """[seconds since the first publish, events stored, items reconciled] per ``step``."""
    like = {"like": f"{prefix}-%", "start": start, "step": step}
    with engine.connect() as conn:
        stored: dict[int, int] = dict(
            conn.execute(
                text(
                    "SELECT floor((extract(epoch FROM received_at) - :start) / :step)::int, "
                    "count(*) FROM inbox_events WHERE order_ref LIKE :like GROUP BY 1"
                ),
                like,
            ).all()
        )
        done: dict[int, int] = dict(
            conn.execute(
                text(
                    "SELECT floor((extract(epoch FROM at) - :start) / :step)::int, count(*) "
                    "FROM outcomes WHERE order_ref LIKE :like AND redemption_id IS NOT NULL "
                    "GROUP BY 1"
                ),
                like,
            ).all()
        )
    last = max([*stored, *done], default=-1)
    return [[round(n * step), int(stored.get(n, 0)), int(done.get(n, 0))] for n in range(last + 1)]


def burst(
    engine: Engine,
    backend: infra.Backend,
    sandbox: infra.SandboxProcess,
    pool: infra.Workers,
    traffic: Scenario,
    timeout: float,
) -> dict[str, Any]:
    cpu_before = infra.system_cpu_seconds()
    sandbox_cpu_before = sandbox.cpu_seconds()
    roles_before = pool.cpu_by_role()
    ours = {*pool.pids(), sandbox.proc.pid}
    programs_before = infra.cpu_by_program(ours)
    calls_before = sandbox.stats()
    trips_before = round_trips.read(pool.name)
    print(
        f"  burst: publishing {len(traffic.events):,} events ({len(traffic.orders):,} orders, "
        f"{traffic.items:,} items) to {pool.count} worker(s) x -c {pool.concurrency} ...",
        flush=True,
    )
    publication = publish(backend.broker_url, infra.EVENTS_EXCHANGE, traffic)
    print(f"  published in {publication.seconds:.1f} s; waiting for outcomes ...", flush=True)
    state = wait_for_outcomes(engine, "bench", len(traffic.events), timeout)
    cpu_after = infra.system_cpu_seconds()
    sandbox_cpu = sandbox.cpu_seconds() - sandbox_cpu_before
    roles_after = pool.cpu_by_role()
    programs_after = infra.cpu_by_program(ours)
    stats = sandbox.stats()
    trips = round_trips.spent(trips_before, round_trips.read(pool.name))

    by_status, succeeded = _outcome_counts(engine, "bench")
    items = succeeded["coupon"] + succeeded["points"]
    end = _epoch(succeeded["last_outcome"]) if succeeded["last_outcome"] else time.time()
    span = max(end - publication.started, 1e-9)
    last_stored = succeeded["last_stored"]
    intake_span = (_epoch(last_stored) - publication.started) if last_stored else None

    def delta(name: str) -> dict[str, int]:
        now, then = stats.get(name, {}), calls_before.get(name, {})
        return {key: int(now[key]) - int(then.get(key, 0)) for key in now}

    by_endpoint = delta("by_endpoint")
    coupon_calls = sum(n for name, n in by_endpoint.items() if "coupon" in name)
    points_calls = sum(n for name, n in by_endpoint.items() if "points" in name)
    calls = int(stats.get("total", 0)) - int(calls_before.get("total", 0))
    busy = cpu_after["busy"] - cpu_before["busy"]
    idle = cpu_after["idle"] - cpu_before["idle"]
    main_cpu = roles_after["main"] - roles_before["main"]
    pool_cpu = roles_after["pool"] - roles_before["pool"]
    orders = len(traffic.orders)
    return {
        "orders": orders,
        "coupons_per_bill": traffic.coupon_items // max(orders, 1),
        "messages": publication.messages,
        "items": traffic.items,
        "coupon_items": traffic.coupon_items,
        "points_items": traffic.points_items,
        "items_final": state["final"],
        "items_succeeded": items,
        "coupon_items_succeeded": succeeded["coupon"],
        "points_items_succeeded": succeeded["points"],
        "unmatched": state["unmatched"],
        "timed_out": bool(state["timed_out"]),
        "outcomes": by_status,
        "publish_s": round(publication.seconds, 2),
        "span_s": round(span, 2),
        "items_per_s": round(items / span, 1),
        "orders_per_s": round(orders / span, 1),
        "intake_span_s": round(intake_span, 2) if intake_span else None,
        "intake_msgs_per_s": round(publication.messages / intake_span, 1) if intake_span else None,
        "api_calls": calls,
        "api_coupon_calls": coupon_calls,
        "api_points_calls": points_calls,
        "api_by_endpoint": by_endpoint,
        "api_by_status": delta("by_status"),
        "api_calls_per_item": round(calls / max(items, 1), 4),
        "api_calls_per_coupon_item": round(coupon_calls / max(succeeded["coupon"], 1), 4),
        "bills_with_coupons_reconciled": succeeded["coupon_bills"],
        "api_coupon_calls_per_bill": round(coupon_calls / max(succeeded["coupon_bills"], 1), 4),
        "api_calls_per_points_item": round(points_calls / max(succeeded["points"], 1), 4),
        **latencies(engine, "bench", publication),
        "table_scans": table_scans(engine),
        "timeline_5s": timeline(engine, "bench", publication.started),
        "cpu": {
            "machine_busy_share": round(busy / max(busy + idle, 1e-9), 3),
            "machine_busy_s": round(busy, 1),
            "worker_main_processes_s": round(main_cpu, 1),
            "worker_pool_processes_s": round(pool_cpu, 1),
            "sandbox_s": round(sandbox_cpu, 1),
            **{
                f"{name}_s": round(seconds, 1)
                for name, seconds in infra.cpu_spent(programs_before, programs_after).items()
            },
            "worker_ms_per_order": round(1000 * (main_cpu + pool_cpu) / max(orders, 1), 2),
            "machine_ms_per_order": round(1000 * busy / max(orders, 1), 2),
            "worker_ms_per_item": round(1000 * (main_cpu + pool_cpu) / max(items, 1), 2),
            "pool_ms_per_item": round(1000 * pool_cpu / max(items, 1), 2),
            "intake_ms_per_item": round(1000 * main_cpu / max(items, 1), 2),
        },
        # Database round trips (statements, transaction ends, pings), issue 14.
        "round_trips": round_trips.per_unit(trips, orders, items),
    }


def paced(
    engine: Engine,
    backend: infra.Backend,
    sandbox: infra.SandboxProcess,
    traffic: Scenario,
    orders_per_s: float,
    timeout: float,
) -> dict[str, Any]:
    print(f"  paced: {len(traffic.orders):,} orders at {orders_per_s:.0f} orders/s ...", flush=True)
    calls_before = sandbox.stats().get("by_endpoint", {})
    publication = publish(
        backend.broker_url, infra.EVENTS_EXCHANGE, traffic, orders_per_s=orders_per_s
    )
    state = wait_for_outcomes(engine, "paced", len(traffic.events), timeout)
    calls = {
        name: int(n) - int(calls_before.get(name, 0))
        for name, n in sandbox.stats().get("by_endpoint", {}).items()
    }
    coupon_calls = sum(n for name, n in calls.items() if "coupon" in name)
    _, succeeded = _outcome_counts(engine, "paced")
    with engine.connect() as conn:
        # Orders whose outcomes are spread over more than a second were reconciled in two goes
        # (a second task for the same order found it locked and came back 1-3 s later).
        split = conn.execute(
            text(
                "SELECT count(*) FROM (SELECT order_ref FROM outcomes WHERE order_ref LIKE "
                "'paced-%' GROUP BY order_ref HAVING max(at) - min(at) > interval '1 second') s"
            )
        ).scalar()
    return {
        "api_by_endpoint": calls,
        "orders_with_outcomes_spread_over_1s": int(split or 0),
        "api_coupon_calls_per_bill": round(coupon_calls / max(succeeded["coupon_bills"], 1), 4),
        "api_calls_per_coupon_item": round(coupon_calls / max(succeeded["coupon"], 1), 4),
        "orders": len(traffic.orders),
        "publish_orders_per_s": round(len(traffic.orders) / max(publication.seconds, 1e-9), 1),
        "items_final": state["final"],
        "unmatched": state["unmatched"],
        "timed_out": bool(state["timed_out"]),
        **latencies(engine, "paced", publication),
    }


def _print_costs(result: dict[str, Any]) -> None:
    cpu = result["cpu"]
    print(
        f"  worker CPU per item: {cpu['worker_ms_per_item']:.2f} ms (intake "
        f"{cpu['intake_ms_per_item']:.2f} + tasks {cpu['pool_ms_per_item']:.2f}; target <= 4)",
        flush=True,
    )
    for role, row in result["round_trips"].items():
        skip = ("per_order", "per_item")
        kinds = ", ".join(f"{k} {v:,}" for k, v in row.items() if k not in skip)
        print(
            f"  database round trips, {role}: {row['per_order']:.2f} per order, "
            f"{row['per_item']:.2f} per item ({kinds})",
            flush=True,
        )


def run(
    sandbox: infra.SandboxProcess,
    *,
    orders: int,
    coupons_per_bill: int,
    workers: int,
    concurrency: int,
    log_dir: Path,
    timeout: float,
    paced_seconds: float,
    paced_share: float,
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
        result = burst(engine, backend, sandbox, pool, traffic, timeout)
        print(
            f"  {result['items_succeeded']:,} items in {result['span_s']:.1f} s = "
            f"{result['items_per_s']:,.0f} items/s; latency p50 "
            f"{result['latency_s']['p50']:.2f} s, p95 {result['latency_s']['p95']:.2f} s",
            flush=True,
        )
        _print_costs(result)
        if paced_seconds > 0 and not result["timed_out"]:
            # Let the burst's leftovers (tasks enqueued twice for an order whose events two
            # intake consumers stored, retries of those) drain, so the paced orders meet an idle
            # pipeline.
            infra.wait_until(
                "the reconcile queue to drain",
                lambda: (backend.queue_state(infra.TASK_QUEUE) or (1, 0))[0] == 0,
                timeout=120,
                every=0.5,
            )
            time.sleep(5.0)
            rate = max(2.0, paced_share * result["orders_per_s"])
            slow = scenario(
                max(10, round(rate * paced_seconds)),
                coupons_per_bill=coupons_per_bill,
                prefix="paced",
                seed=13,
            )
            register_with_sandbox(slow, sandbox.url)
            result["paced"] = paced(engine, backend, sandbox, slow, rate, timeout)
        result.update(workers=workers, concurrency=concurrency, workers_alive_at_end=pool.alive())
        pool.stop()
        result["memory"] = pool.memory.report()
        result["peak_rss_mb"] = max((row["peak_rss_mb"] for row in result["memory"]), default=0.0)
        pool = None
        return result
    finally:
        if pool is not None:
            pool.stop()
        engine.dispose()
        backend.close()
