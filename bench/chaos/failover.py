"""Phase (g): the database fails over to its standby. Two runs, each on a fresh private pair.

**failover** (the targets): orders flow; the primary is stopped (fast shutdown: sessions cut) and
stays down; after ``detect_s`` (a failover manager noticing) the standby is promoted. The workers
and beat were given both hosts (``target_session_attrs=read-write``) and nothing else: no restart,
no new URL. Recovery counts from the promotion.

**lagging standby** (a measurement, not judged against the targets): what an asynchronous standby
loses when the primary *dies* while the standby is behind. Half the orders are stored and
replicated; the standby is then held ``hold_s`` behind (the primary's WAL sender paused) while the
other half is published and the workers spend the request budget; the primary is killed and the
standby promoted. Whatever was committed in those seconds is gone: the rows are counted on both
sides, and the platform's view of the budget (the most requests it accepted in any 60 s window,
against ``LOYALTY_RATE_LIMIT_PER_MINUTE``) says what the lost limiter slots cost.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, text

from bench import infra
from bench.chaos.harness import (
    Publisher,
    Stack,
    by_order,
    counts,
    figures,
    routed,
    traffic,
    wait_settled,
)
from bench.chaos.pg_standby import Node, StandbyPair
from bench.chaos.phases import RECOVERY_TARGET_S, _dead_letters, _publish_paced
from tests import services
from worker.ops import migrate

DATABASE = "recon_chaos"
#: Tables whose rows a lagging standby may never have received, counted on both sides.
COUNTED = ("inbox_events", "outcomes", "rate_limit_slots_used")
#: (g) lagging run: the sweeper re-drives work left open this long.
SWEEP_AFTER_S = 20


def failover(
    sandbox: infra.SandboxProcess,
    log_dir: Path,
    *,
    orders: int,
    detect_s: float,
    lag_orders: int,
    hold_s: float,
    budget: int,
) -> dict[str, Any]:
    result = _clean_failover(sandbox, log_dir, orders=orders, detect_s=detect_s)
    try:
        lagging = _lagging_standby(
            sandbox, log_dir, orders=lag_orders, hold_s=hold_s, budget=budget
        )
    except Exception as exc:  # the measurement must not hide the judged run's figures
        lagging = {"error": f"{type(exc).__name__}: {exc}"}
    _print_lagging(lagging)
    result["lagging_standby"] = lagging
    return result


def _backend(pair: StandbyPair, name: str) -> tuple[str, str, str]:
    database_url = pair.create_database(DATABASE)
    migrate.upgrade(database_url)  # through the host list, as `recon migrate` would
    broker_url, vhost = services.create_vhost(f"recon_chaos_{name}")
    return database_url, broker_url, vhost


def _clean_failover(
    sandbox: infra.SandboxProcess, log_dir: Path, *, orders: int, detect_s: float
) -> dict[str, Any]:
    pair = StandbyPair()
    prefix = "ha"
    scenario = traffic(orders, prefix=prefix, seed=71)
    vhost = ""
    stack = None
    hard_deadline = time.monotonic() + 420
    try:
        database_url, broker_url, vhost = _backend(pair, "ha")
        stack = Stack("ha", database_url, broker_url, sandbox, log_dir)
        fleet, engine = stack.start([scenario])
        publisher = Publisher(broker_url)
        groups = by_order(scenario)
        per_s = 10.0
        feeder = threading.Thread(
            target=_publish_paced, args=(publisher, groups, per_s, hard_deadline), daemon=True
        )
        feeder.start()
        time.sleep(len(groups) / per_s / 2)
        lag = pair.lag_bytes()
        print(f"    primary stopped (standby {lag} bytes behind); promotion in {detect_s:.0f} s")
        pair.primary.stop("fast")
        stopped = time.monotonic()
        time.sleep(detect_s)
        promoted = pair.promote()
        print(f"    standby promoted {promoted - stopped:.1f} s after the stop", flush=True)
        feeder.join(timeout=max(1.0, hard_deadline - time.monotonic()))
        recovery = wait_settled(
            engine,
            prefix,
            scenario,
            since=promoted,
            timeout=max(
                10.0, min(hard_deadline, promoted + 3 * RECOVERY_TARGET_S) - time.monotonic()
            ),
            fleet=fleet,
        )
        result = figures(
            engine,
            prefix,
            scenario,
            publisher.published,
            sandbox.stats(),
            recovery_s=recovery,
            manual_restarts=fleet.manual_restarts,
            dead_lettered=_dead_letters(broker_url),
        )
        result["tasks_failed"] = fleet.task_failures()
        result.update(
            primary_stopped="fast shutdown, down until the phase ended",
            standby_lag_bytes_at_stop=lag,
            promoted_s=round(promoted - stopped, 1),
            writes_now_on_port=_writer_port(engine),
            standby_port=pair.standby.port,
        )
        return result
    finally:
        if stack is not None:
            stack.close()
        pair.close()
        _delete_vhost(vhost)


def _lagging_standby(
    sandbox: infra.SandboxProcess, log_dir: Path, *, orders: int, hold_s: float, budget: int
) -> dict[str, Any]:
    pair = StandbyPair()
    prefix = "lag"
    scenario = traffic(orders, prefix=prefix, seed=72)
    vhost = ""
    stack = None
    try:
        database_url, broker_url, vhost = _backend(pair, "lag")
        # The work done in the lag is forgotten with its rows, while its task messages were
        # acknowledged: only the sweeper takes it again. A quick sweeper lets the run see that
        # happen (at its defaults it would take RECON_SWEEP_AFTER_SECONDS, 5 minutes).
        env = {
            "LOYALTY_RATE_LIMIT_PER_MINUTE": str(budget),
            "RECON_SWEEP_AFTER_SECONDS": str(SWEEP_AFTER_S),
            "RECON_SWEEP_INTERVAL_SECONDS": "5",
        }
        stack = Stack("lag", database_url, broker_url, sandbox, log_dir, extra_env=env)
        fleet, engine = stack.start([scenario])
        publisher = Publisher(broker_url)
        groups = by_order(scenario)
        half = len(groups) // 2
        publisher.send(routed(b for group in groups[:half] for b in group))
        first_half = sum(len(group) for group in groups[:half])
        infra.wait_until(
            "the first half stored and replicated",
            lambda: counts(engine, prefix)["stored"] >= first_half and pair.lag_bytes() == 0,
            timeout=120,
            every=0.2,
        )
        held_at = _db_epoch(pair.primary)
        pair.hold_replication()
        publisher.send(routed(b for group in groups[half:] for b in group))
        time.sleep(hold_s)
        on_primary = _row_counts(pair.primary, since=held_at)
        behind = pair.lag_bytes()
        pair.crash_primary()
        promoted = pair.promote()
        on_standby = _row_counts(pair.standby, since=held_at)
        print(f"    primary killed {hold_s:.0f} s behind ({behind} bytes); standby promoted")
        # Lost messages never settle: wait for the stored work to be terminal instead.
        settled_s = _wait_open_work(engine, prefix, since=promoted, timeout=240, fleet=fleet)
        stats = sandbox.stats()
        known = counts(engine, prefix)["references"]
        result = figures(
            engine,
            prefix,
            scenario,
            publisher.published,
            stats,
            recovery_s=settled_s,
            manual_restarts=fleet.manual_restarts,
            dead_lettered=_dead_letters(broker_url),
        )
        result.update(
            held_s=hold_s,
            standby_behind_bytes=behind,
            rows_lost={name: on_primary[name] - on_standby[name] for name in COUNTED},
            budget_per_minute=budget,
            most_accepted_in_60s=_most_in_window(sandbox),
            # Points the platform took for requests whose rows the promoted standby never got:
            # taken, acknowledged at the broker, and on no record of ours.
            redeems_applied_without_a_row=len(set(stats.get("redeem_effects", {})) - known),
            sweep_after_s=SWEEP_AFTER_S,
        )
        result["over_budget_in_one_window"] = max(0, result["most_accepted_in_60s"] - budget)
        return result
    finally:
        if stack is not None:
            stack.close()
        pair.close()
        _delete_vhost(vhost)


def _db_epoch(node: Node) -> float:
    return float(str(node.query("SELECT extract(epoch FROM clock_timestamp())")))


def _row_counts(node: Node, *, since: float) -> dict[str, int]:
    """Rows of the counted tables on ``node``: inbox rows and outcomes in all, limiter slots
    stamped since ``since`` (the ring's rows exist from the start; their stamps are the news)."""
    url = f"postgresql://postgres@127.0.0.1:{node.port}/{DATABASE}"
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM inbox_events), (SELECT count(*) FROM outcomes), "
            "(SELECT count(*) FROM rate_limit_slots WHERE used_at > %s)",
            (since,),
        ).fetchone()
    assert row is not None
    return dict(zip(COUNTED, (int(v) for v in row), strict=True))


def _wait_open_work(
    engine: Engine, prefix: str, *, since: float, timeout: float, fleet: Any
) -> float | None:
    """Seconds from ``since`` until every stored item is terminal (None: not within timeout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fleet.supervise()
        with contextlib.suppress(Exception):  # the database may still be failing over
            if counts(engine, prefix)["open"] == 0:
                return round(time.monotonic() - since, 1)
        time.sleep(0.5)
    return None


def _most_in_window(sandbox: infra.SandboxProcess, window_s: float = 60.0) -> int:
    """The most platform requests the sandbox accepted (not 429) in any ``window_s`` window."""
    answer = sandbox.admin("GET", "requests?limit=10000")
    times = sorted(
        float(r["time"])
        for r in answer["requests"]
        if r.get("status") is not None and str(r["status"]) != "429"
    )
    most = start = 0
    for end, at in enumerate(times):
        while times[start] <= at - window_s:
            start += 1
        most = max(most, end - start + 1)
    return most


def _writer_port(engine: Engine) -> int | None:
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT inet_server_port()")).scalar() or 0)
    except Exception:
        return None


def _delete_vhost(vhost: str) -> None:
    if not vhost:
        return
    try:
        services.delete_vhost(vhost)
    except Exception as exc:  # cleanup must not hide the phase's result
        print(f"    cleanup: {exc}", flush=True)


def _print_lagging(figures_: dict[str, Any]) -> None:
    print("  lagging standby (measured, not judged):")
    if "error" in figures_:
        print(f"    could not run: {figures_['error']}")
        return
    for name in (
        "held_s", "standby_behind_bytes", "rows_lost", "messages_published", "messages_lost",
        "double_redemptions", "items_not_terminal", "sandbox_redeem_requests_sent",
        "sandbox_redeem_effects", "redeems_applied_without_a_row", "budget_per_minute",
        "most_accepted_in_60s", "over_budget_in_one_window", "recovery_s", "manual_restarts",
    ):  # fmt: skip
        print(f"    {name:<30} {figures_.get(name)}")
