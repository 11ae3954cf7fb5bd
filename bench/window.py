"""Rate figures against the platform's window (not against a drip). Figures, not timed tests.

Each run: a fresh database and vhost, ``recon worker`` processes, the sandbox (its own process)
counting a strict sliding 60 s window at the same limit the workers are told.

* **burst**: N calls with N below the limit (100 orders x 3 coupons, one call each, 120/min,
  4 workers): first publish -> last outcome, against the floor (ceil(N / limit) - 1) x 60 s.
* **pairs**: 100 points redeems, each followed by its bill's points update (200 calls, 120/min,
  2 workers): against the floor of 60 s (120 calls in the first window, 80 in the next).
* **throttle**: a steady stream at the default budget; the sandbox throttles the key for a few
  seconds (every request answered 429 with Retry-After): 429s received after the first one.
* **backfill**: at least 5,000 open items re-driven by the nightly backfill's path (the re-drive
  queue) while live orders arrive: p95 of a live order's publish -> last outcome, and how the
  calls split between live and backfill while both wanted the budget.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from bench import infra
from bench.load import publish, register_with_sandbox
from bench.pipeline import FINAL, latencies, percentile
from models.session import build_engine
from worker.tools.scenario import build_scenario

COUPON_ENDPOINT = "PUT /v2/coupon/redeem"


class _Run:
    """One backend, one set of workers; everything stopped and dropped at the end."""

    def __init__(
        self, sandbox: infra.SandboxProcess, *, name: str, limit: int, workers: int, log_dir: Path
    ) -> None:
        self.sandbox = sandbox
        self.backend = infra.Backend.create(f"recon_bench_{name}")
        self.engine = build_engine(self.backend.database_url, pool_size=2, max_overflow=2)
        self.pool: infra.Workers | None = None
        try:
            sandbox.reset(rate_limit_per_minute=limit)
            self.pool = infra.Workers(
                self.backend,
                sandbox,
                count=workers,
                concurrency=1,
                rate_limit_per_minute=limit,
                name=name,
                log_dir=log_dir,
            )
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.pool is not None:
            self.pool.stop()
            self.pool = None
        self.engine.dispose()
        self.backend.close()

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def last_outcome_epoch(self, like: str) -> float | None:
        value = self.scalar(
            "SELECT extract(epoch FROM max(at)) FROM outcomes WHERE order_ref LIKE :like",
            like=like,
        )
        return None if value is None else float(value)


def _wait_final(run: _Run, like: str, items: int, timeout: float) -> int:
    done = 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = int(
            run.scalar(
                f"SELECT count(*) FROM redemptions WHERE order_ref LIKE :like AND state IN {FINAL}",
                like=like,
            )
            or 0
        )
        if done >= items:
            break
        time.sleep(0.5)
    return done


def burst(
    sandbox: infra.SandboxProcess,
    *,
    limit: int = 120,
    orders: int = 100,
    coupons: int = 3,
    workers: int = 4,
    log_dir: Path,
) -> dict[str, Any]:
    traffic = build_scenario(
        orders,
        seed=31,
        coupons_per_order=(coupons, coupons),
        points_share=0.0,
        duplicate_share=0.0,
        shuffle=False,
        prefix="wb",
    )
    run = _Run(sandbox, name="wb", limit=limit, workers=workers, log_dir=log_dir)
    try:
        register_with_sandbox(traffic, sandbox.url)
        print(f"  burst: {orders} orders x {coupons} coupons at {limit}/min ...", flush=True)
        publication = publish(run.backend.broker_url, infra.EVENTS_EXCHANGE, traffic)
        done = _wait_final(run, "wb-%", traffic.items, timeout=300)
        last = run.last_outcome_epoch("wb-%") or time.time()
        stats = sandbox.stats()
    finally:
        run.close()
    calls = int(stats.get("by_endpoint", {}).get(COUPON_ENDPOINT, 0))
    floor = (math.ceil(calls / limit) - 1) * 60 if calls else 0
    seconds = last - publication.started
    return {
        "limit_per_minute": limit,
        "workers": workers,
        "orders": orders,
        "items": traffic.items,
        "items_final": done,
        "api_calls": calls,
        "seconds_first_publish_to_last_outcome": round(seconds, 2),
        "floor_s": floor,
        "over_floor_s": round(seconds - floor, 2),
        "throttled_429": int(stats.get("by_status", {}).get("429", 0)),
    }


def _pair_events(orders: int) -> list[dict[str, Any]]:
    now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    out = []
    for n in range(orders):
        order_ref, mobile = f"wp-{n:05d}", f"9198{n:08d}"
        customer = {"identifier_type": "mobile", "identifier_value": mobile}
        out.append(
            {
                "event_id": f"{order_ref}-redeem",
                "type": "points.redeem_requested",
                "occurred_at": now,
                "order_ref": order_ref,
                "customer": customer,
                "points": "10",
            }
        )
        out.append(
            {
                "event_id": f"{order_ref}-bill",
                "type": "transaction.completed",
                "occurred_at": now,
                "order_ref": order_ref,
                "bill_number": f"WP-{n:05d}",
                "bill_id": 1000 + n,
                "bill_amount": "10.00",
                "customer": customer,
            }
        )
    return out


def pairs(
    sandbox: infra.SandboxProcess,
    *,
    limit: int = 120,
    orders: int = 100,
    workers: int = 2,
    log_dir: Path,
) -> dict[str, Any]:
    from kombu import Connection

    from worker.tools.publishing import dumps, publish_bodies

    run = _Run(sandbox, name="wp", limit=limit, workers=workers, log_dir=log_dir)
    try:
        print(f"  pairs: {orders} redeems + {orders} updates at {limit}/min ...", flush=True)
        started = time.time()
        with Connection(run.backend.broker_url, connect_timeout=10) as conn:
            publish_bodies(conn, infra.EVENTS_EXCHANGE, [dumps(e) for e in _pair_events(orders)])
        # A redemption row exists once its redeem succeeded; it is final once updated.
        done = _wait_final(run, "wp-%", orders, timeout=400)
        last = run.last_outcome_epoch("wp-%") or time.time()
        stats = sandbox.stats()
    finally:
        run.close()
    calls = int(stats.get("total", 0))
    floor = (math.ceil(calls / limit) - 1) * 60 if calls else 0
    seconds = last - started
    return {
        "limit_per_minute": limit,
        "workers": workers,
        "orders": orders,
        "updates_final": done,
        "api_calls": calls,
        "seconds_first_publish_to_last_outcome": round(seconds, 2),
        "floor_s": floor,
        "over_floor_share": round((seconds - floor) / floor, 4) if floor else None,
        "throttled_429": int(stats.get("by_status", {}).get("429", 0)),
    }


def throttle(
    sandbox: infra.SandboxProcess,
    *,
    limit: int = 1000,
    orders: int = 150,
    orders_per_s: float = 10.0,
    throttle_s: int = 3,
    workers: int = 2,
    log_dir: Path,
) -> dict[str, Any]:
    traffic = build_scenario(
        orders,
        seed=32,
        coupons_per_order=(1, 1),
        points_share=1.0,
        duplicate_share=0.0,
        shuffle=False,
        prefix="wt",
    )
    run = _Run(sandbox, name="wt", limit=limit, workers=workers, log_dir=log_dir)
    try:
        register_with_sandbox(traffic, sandbox.url)
        print(
            f"  429 burst: {orders} orders at {orders_per_s:.0f}/s; the sandbox throttles the key "
            f"for {throttle_s} s after 5 s ...",
            flush=True,
        )
        publisher = threading.Thread(
            target=publish,
            args=(run.backend.broker_url, infra.EVENTS_EXCHANGE, traffic),
            kwargs={"orders_per_s": orders_per_s},
            daemon=True,
        )
        publisher.start()
        time.sleep(5.0)
        sandbox.admin("POST", "throttle", {"seconds": throttle_s})
        publisher.join(timeout=orders / orders_per_s + 60)
        done = _wait_final(run, "wt-%", traffic.items, timeout=300)
        stats = sandbox.stats()
        gave_up = int(
            run.scalar("SELECT count(*) FROM redemptions WHERE state IN ('gave_up', 'unknown')")
            or 0
        )
        recorded_429 = int(run.scalar("SELECT count(*) FROM outcomes WHERE http_status = 429"))
    finally:
        run.close()
    received = int(stats.get("by_status", {}).get("429", 0))
    in_flight = workers  # -c 1 each: at most one request per process on the wire
    return {
        "limit_per_minute": limit,
        "workers": workers,
        "throttle_s": throttle_s,
        "items": traffic.items,
        "items_final": done,
        "received_429": received,
        "further_429_after_first": max(received - 1, 0),
        "other_requests_possibly_in_flight": in_flight - 1,
        "outcome_rows_with_429": recorded_429,
        "items_gave_up_or_unknown": gave_up,
    }


def _insert_backfill(engine: Engine, orders: int, coupons: int, first_id: int) -> list[dict]:
    """Open items the nightly backfill re-drives: bills known, coupons gave_up."""
    registered = []
    with engine.begin() as conn:
        for n in range(orders):
            order_ref, mobile = f"wf-{n:06d}", f"9197{n:08d}"
            tx_id = conn.execute(
                text(
                    "INSERT INTO transactions (event_id, order_ref, bill_number, bill_id, "
                    "bill_amount, explicit, customer_type, customer_value, created_at) VALUES "
                    "(:e, :o, :b, :i, 10, false, 'mobile', :m, now()) RETURNING id"
                ),
                {
                    "e": f"{order_ref}-bill",
                    "o": order_ref,
                    "b": f"WF-{n:06d}",
                    "i": n + 1,
                    "m": mobile,
                },
            ).scalar()
            rows = []
            for c in range(coupons):
                rid = first_id + n * coupons + c
                event_id = f"{order_ref}-c{c}"
                rows.append({"r": str(rid), "o": order_ref, "m": mobile, "e": event_id, "t": tx_id})
                registered.append(
                    {"redemption_id": rid, "customer": {"type": "mobile", "value": mobile}}
                )
            conn.execute(
                text(
                    "INSERT INTO redemptions (kind, redemption_id, order_ref, customer_type, "
                    "customer_value, event_id, transaction_id, state, attempts, created_at, "
                    "updated_at) VALUES ('coupon', :r, :o, 'mobile', :m, :e, :t, 'gave_up', 5, "
                    "now(), now())"
                ),
                rows,
            )
    return registered


def backfill(
    sandbox: infra.SandboxProcess,
    *,
    limit: int = 1000,
    backfill_orders: int = 1250,
    coupons: int = 4,
    live_orders_per_s: float = 2.0,
    workers: int = 2,
    log_dir: Path,
    cap_s: float = 240.0,
) -> dict[str, Any]:
    from worker.app import configure
    from worker.observe.logging import configure_logging
    from worker.ops import backfill as backfill_logic
    from worker.reconcile import tasks
    from worker.settings import load_settings

    configure_logging("WARNING")  # the backfill's progress lines would drown the figures
    items = backfill_orders * coupons
    live_cap = int(cap_s * live_orders_per_s)
    live = build_scenario(
        live_cap,
        seed=33,
        coupons_per_order=(1, 1),
        points_share=1.0,
        duplicate_share=0.0,
        shuffle=False,
        prefix="wl",
    )
    run = _Run(sandbox, name="wf", limit=limit, workers=workers, log_dir=log_dir)
    stop = threading.Event()
    publisher: threading.Thread | None = None
    try:
        registered = _insert_backfill(run.engine, backfill_orders, coupons, first_id=50_000_000)
        for start in range(0, len(registered), 5000):
            sandbox.admin("POST", "coupons", {"redemptions": registered[start : start + 5000]})
        register_with_sandbox(live, sandbox.url)
        configure(
            load_settings(
                {
                    "RECON_DATABASE_URL": run.backend.database_url,
                    "RECON_BROKER_URL": run.backend.broker_url,
                }
            )
        )
        print(
            f"  backfill: {items:,} items ({backfill_orders:,} calls) re-driven at {limit}/min "
            f"while live orders arrive at {live_orders_per_s:.0f}/s ...",
            flush=True,
        )
        cpu_before = run.pool.cpu_seconds() if run.pool else 0.0
        started = time.time()
        summary = backfill_logic.run_backfill(
            run.engine,
            None,
            policy=None,
            options=backfill_logic.Options(),
            hand_off=tasks.enqueue_redriven,
        )
        publication_box: dict[str, Any] = {}

        def publish_live() -> None:
            publication_box["p"] = publish(
                run.backend.broker_url,
                infra.EVENTS_EXCHANGE,
                live,
                orders_per_s=live_orders_per_s,
                stop=stop,
            )

        publisher = threading.Thread(target=publish_live, daemon=True)
        publisher.start()
        done = _wait_final(run, "wf-%", items, timeout=cap_s)
        backfill_end = run.last_outcome_epoch("wf-%") or time.time()
        stop.set()
        publisher.join(timeout=30)
        publication = publication_box["p"]
        published_orders = len(publication.bill_published_at)
        live_items = 2 * published_orders
        _wait_final(run, "wl-%", live_items, timeout=120)
        cpu = (run.pool.cpu_seconds() if run.pool else 0.0) - cpu_before
        live_latency = latencies(run.engine, "wl", publication)
        requests = sandbox.admin("GET", "requests?limit=10000")["requests"]
        stats = sandbox.stats()
    finally:
        stop.set()
        if publisher is not None:
            publisher.join(timeout=30)
        run.close()
    split = _split(requests, started, backfill_end)
    return {
        "limit_per_minute": limit,
        "workers": workers,
        "backfill_items": items,
        "backfill_orders_handed_to_the_redrive_queue": summary.orders,
        "backfill_items_final": done,
        "backfill_seconds": round(backfill_end - started, 1),
        "live_orders_published": published_orders,
        "live_orders_per_s": live_orders_per_s,
        "live": live_latency,
        "split_while_backfill_ran": split,
        "throttled_429": int(stats.get("by_status", {}).get("429", 0)),
        "worker_cpu_s": round(cpu, 1),
        "worker_cpu_ms_per_item": round(1000 * cpu / max(items + live_items, 1), 2),
    }


def _split(requests: list[dict[str, Any]], start: float, end: float) -> dict[str, Any]:
    """Calls per 10 s while the backfill ran, told apart by their bill number."""
    buckets: dict[int, Counter[str]] = {}
    for entry in requests:
        at = float(entry["time"])
        if not start <= at <= end or entry.get("status") == 429:
            continue
        body = entry.get("body") or {}
        bill = ""
        if isinstance(body, dict):
            items = body.get("redemptions") or [{}]
            bill = str(items[0].get("transactionNumber") or body.get("billNumber") or "")
        kind = "backfill" if bill.startswith("WF-") else "live"
        buckets.setdefault(int((at - start) // 10), Counter())[kind] += 1
    total = Counter[str]()
    for counter in buckets.values():
        total.update(counter)
    seconds = max(end - start, 1e-9)
    return {
        "live_calls": total["live"],
        "backfill_calls": total["backfill"],
        "live_calls_per_min": round(60 * total["live"] / seconds, 1),
        "backfill_calls_per_min": round(60 * total["backfill"] / seconds, 1),
        "per_10s": [[10 * k, c["live"], c["backfill"]] for k, c in sorted(buckets.items())],
        "busiest_10s_calls": max((sum(c.values()) for c in buckets.values()), default=0),
    }


__all__ = ["backfill", "burst", "pairs", "percentile", "throttle"]
