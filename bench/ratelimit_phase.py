"""Phase 2: the shared rate limit under saturation.

The sandbox throttles at 6000 requests per minute per API key (a strict sliding 60 s window, as
the platform counts), the workers are told the same limit, and more work is published than the
limit allows in the window. Over a 60 s window
taken once the work flows, we count the requests the sandbox accepted and every 429 it answered.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from bench import infra, round_trips
from bench.load import publish, register_with_sandbox, scenario
from bench.pipeline import FINAL
from models.session import build_engine


def _accepted(stats: dict[str, Any]) -> int:
    by_status = stats.get("by_status", {})
    return int(stats.get("total", 0)) - int(by_status.get("429", 0))


def run(
    sandbox: infra.SandboxProcess,
    *,
    limit_per_minute: int,
    window_s: float,
    orders: int,
    coupons_per_bill: int,
    workers: int,
    concurrency: int,
    log_dir: Path,
    mode: str,
    demand: float,
) -> dict[str, Any]:
    """``mode`` "backlog": publish everything, let the intake store it, then open the window on
    the queued reconcile tasks. "paced": publish during the window at ``demand`` times the
    order rate the limit allows (each order costs two calls), as order systems would."""
    calls_per_order = 2
    limit_orders_per_s = limit_per_minute / 60 / calls_per_order
    warmup_s = 5.0
    if mode == "paced":
        rate = demand * limit_orders_per_s
        orders = max(orders, round(rate * (window_s + warmup_s + 10)))
    traffic = scenario(orders, coupons_per_bill=coupons_per_bill, prefix="rl", seed=12)
    backend = infra.Backend.create("recon_bench_rl")
    engine = build_engine(backend.database_url, pool_size=1, max_overflow=1)
    pool = None
    publisher: threading.Thread | None = None
    stop_publishing = threading.Event()
    try:
        sandbox.reset(rate_limit_per_minute=limit_per_minute)
        register_with_sandbox(traffic, sandbox.url)
        pool = infra.Workers(
            backend,
            sandbox,
            count=workers,
            concurrency=concurrency,
            rate_limit_per_minute=limit_per_minute,
            name="rl",
            log_dir=log_dir,
        )
        capacity = limit_per_minute * window_s / 60
        print(
            f"  {mode}: {len(traffic.events):,} events ({orders:,} orders, "
            f"{calls_per_order * orders:,} API calls; the window allows {capacity:,.0f}) to "
            f"{workers} worker(s) x -c {concurrency} ...",
            flush=True,
        )
        stored_before_window = None
        if mode == "paced":
            publisher = threading.Thread(
                target=publish,
                args=(backend.broker_url, infra.EVENTS_EXCHANGE, traffic),
                kwargs={"orders_per_s": rate, "stop": stop_publishing},
                name="publisher",
                daemon=True,
            )
            publisher.start()
        else:
            publish(backend.broker_url, infra.EVENTS_EXCHANGE, traffic)
            # The intake starves the reconcile tasks while it has a backlog (see README):
            # let it store everything first, so the window measures the limiter.
            infra.wait_until(
                "the intake to store every event",
                lambda: _stored(engine) >= len(traffic.events),
                timeout=max(300, len(traffic.events) / 100),
                every=1.0,
            )
            stored_before_window = _stored(engine)
        infra.wait_until(
            "the first API calls", lambda: sandbox.stats().get("total", 0) > 0, timeout=60
        )
        time.sleep(warmup_s)
        print(f"  measuring a {window_s:.0f} s window ...", flush=True)
        cpu_before, roles_before = infra.system_cpu_seconds(), pool.cpu_by_role()
        before, opened, wall_opened = sandbox.stats(), time.monotonic(), time.time()
        # Per second: requests accepted and requests refused a slot (deferred to the queue), so
        # a herd of deferred tasks coming back together shows.
        each_second: list[tuple[int, int]] = []
        last, refused = _accepted(before), round_trips.total(pool.name, DEFERRALS)
        now = before
        while time.monotonic() - opened < window_s:
            time.sleep(min(1.0, max(0.0, window_s - (time.monotonic() - opened))))
            now, deferrals = sandbox.stats(), round_trips.total(pool.name, DEFERRALS)
            each_second.append((_accepted(now) - last, round(deferrals - refused)))
            last, refused = _accepted(now), deferrals
        after, closed = now, time.monotonic()
        trace = [sum(n for n, _ in each_second[i : i + 5]) for i in range(0, len(each_second), 5)]
        cpu_after, roles_after = infra.system_cpu_seconds(), pool.cpu_by_role()
        busy = cpu_after["busy"] - cpu_before["busy"]
        idle = cpu_after["idle"] - cpu_before["idle"]
        seconds = closed - opened
        with engine.connect() as conn:
            done = int(
                conn.execute(
                    text(f"SELECT count(*) FROM redemptions WHERE state IN {FINAL}")
                ).scalar()
                or 0
            )
            stored = _stored(engine)
        saturated = done < traffic.items
        stop_publishing.set()
        alive = pool.alive()
        pool.stop()
        memory = pool.memory.report()
        pool = None
        final = sandbox.stats()
        final_per_second = final.get("per_second", {}).get(infra.USERNAME, {})
        accepted = _accepted(after) - _accepted(before)
        allowed = limit_per_minute * seconds / 60
        per_second = final.get("per_second", {}).get(infra.USERNAME, {})
        return {
            "mode": mode,
            "demand_over_limit": demand if mode == "paced" else None,
            "limit_per_minute": limit_per_minute,
            "workers": workers,
            "concurrency": concurrency,
            "orders_published": orders,
            "messages": len(traffic.events),
            "events_stored_before_window": stored_before_window,
            "events_stored_at_window_end": stored,
            "window_s": round(seconds, 2),
            "accepted_in_window": accepted,
            "allowed_in_window": round(allowed, 1),
            "share_of_limit": round(accepted / allowed, 4),
            "accepted_per_5s": trace,
            "accepted_per_s": [n for n, _ in each_second],
            "refused_per_s": [n for _, n in each_second],
            "refused_in_window": sum(n for _, n in each_second),
            "peak_refused_in_one_second": max((n for _, n in each_second), default=0),
            **_windows(final_per_second, wall_opened, seconds, limit_per_minute),
            **_steady(final_per_second, wall_opened, seconds, limit_per_minute),
            "max_requests_in_one_second": max((int(n) for n in per_second.values()), default=0),
            "throttled_429": int(final.get("by_status", {}).get("429", 0)),
            "throttled_counter": int(final.get("throttled", 0)),
            "api_by_status": final.get("by_status", {}),
            "items_final_at_window_end": done,
            "cpu_in_window": {
                "machine_busy_share": round(busy / max(busy + idle, 1e-9), 3),
                "worker_main_processes_s": round(roles_after["main"] - roles_before["main"], 1),
                "worker_pool_processes_s": round(roles_after["pool"] - roles_before["pool"], 1),
            },
            "work_left_at_window_end": saturated,
            "workers_alive_at_end": alive,
            "memory": memory,
            "peak_rss_mb": max((row["peak_rss_mb"] for row in memory), default=0.0),
        }
    finally:
        if pool is not None:
            pool.stop()
        stop_publishing.set()
        if publisher is not None:
            publisher.join(timeout=10)
        engine.dispose()
        backend.close()


DEFERRALS = "recon_ratelimit_deferrals"


def _windows(
    counts: dict[str, int], opened: float, seconds: float, limit_per_minute: int
) -> dict[str, Any]:
    """The share of the limit in every 60 s window inside the measured span (one window when
    the span is 60 s), from the sandbox's requests per second."""
    first, last = int(opened) + 1, int(opened + seconds) - 1
    per_s = [int(counts.get(str(t), 0)) for t in range(first, last + 1)]
    sums = [sum(per_s[i : i + 60]) for i in range(0, max(len(per_s) - 59, 1))]
    allowed = limit_per_minute * min(60, len(per_s)) / 60
    return {
        "sliding_60s_windows": len(sums),
        "sliding_60s_min_share": round(min(sums) / max(allowed, 1), 4),
        "sliding_60s_max_count": max(sums),
    }


#: A window is "steady" when it opens at least this long after the first call: a turn of the
#: ring (60.25 s) and the phase's 5 s warm-up, as the measured span opens 5 s after the first
#: call. The first minute's burst (a backlog smaller than the limit goes at once, and the first
#: minute does not know yet that more is coming) and its echo are behind it.
FIRST_TURN_S = 65


def _steady(
    counts: dict[str, int], opened: float, seconds: float, limit_per_minute: int
) -> dict[str, Any]:
    """The lowest share of the limit in the 60 s windows inside the measured span that open a
    full turn of the ring after the first call (None when the span holds none)."""
    busy = [int(t) for t, n in counts.items() if int(n) > 0]
    if not busy:
        return {"first_call_s_before_window": None, "steady_60s_windows": 0}
    first_call = min(busy)
    start, last = max(int(opened) + 1, first_call + FIRST_TURN_S), int(opened + seconds) - 1
    sums = [
        sum(int(counts.get(str(t), 0)) for t in range(begin, begin + 60))
        for begin in range(start, last - 58)
    ]
    return {
        "first_call_s_before_window": round(opened - first_call, 1),
        "steady_60s_windows": len(sums),
        "steady_60s_min_share": round(min(sums) / limit_per_minute, 4) if sums else None,
    }


def _stored(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM inbox_events")).scalar() or 0)
