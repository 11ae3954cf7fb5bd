"""Phase (g), measured: what a standby that is behind loses when the primary dies.

Half the orders are stored and replicated; the standby is then held ``hold_s`` behind (the
primary's WAL sender paused, as behind a slow or broken link) while the other half is published
and the workers spend the request budget; the primary is killed and the standby promoted. Rows
committed in those seconds are counted on both sides; the platform's view of the budget (the most
requests it accepted in any 60 s window, against ``LOYALTY_RATE_LIMIT_PER_MINUTE``) says what the
lost limiter slots cost. ``synchronous``: the same with ``synchronous_standby_names`` set, where a
commit returns only once the standby has it.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine

from bench import infra
from bench.chaos.harness import Publisher, Stack, by_order, counts, figures, routed, traffic
from bench.chaos.pg_standby import DATABASE, Node, StandbyPair, backend, delete_vhost
from bench.chaos.phases import _dead_letters

#: Tables whose rows a lagging standby may never have received, counted on both sides.
COUNTED = ("inbox_events", "outcomes", "rate_limit_slots_used")
#: The sweeper re-drives work left open this long (its default is 5 minutes).
SWEEP_AFTER_S = 20


def run(
    sandbox: infra.SandboxProcess,
    log_dir: Path,
    *,
    orders: int,
    hold_s: float,
    budget: int,
    synchronous: bool,
) -> dict[str, Any]:
    pair = StandbyPair(synchronous=synchronous)
    prefix = "sync" if synchronous else "lag"
    scenario = traffic(orders, prefix=prefix, seed=73 if synchronous else 72)
    vhost = ""
    stack = None
    try:
        database_url, broker_url, vhost = backend(pair, prefix)
        # The work done in the lag is forgotten with its rows, while its task messages were
        # acknowledged: only the sweeper takes it again. A quick sweeper lets the run see that
        # happen (at its defaults it would take RECON_SWEEP_AFTER_SECONDS, 5 minutes).
        env = {
            "LOYALTY_RATE_LIMIT_PER_MINUTE": str(budget),
            "RECON_SWEEP_AFTER_SECONDS": str(SWEEP_AFTER_S),
            "RECON_SWEEP_INTERVAL_SECONDS": "5",
        }
        stack = Stack(prefix, database_url, broker_url, sandbox, log_dir, extra_env=env)
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
        delete_vhost(vhost)


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


def show(label: str, figures_: dict[str, Any]) -> None:
    print(f"  {label.replace('_', ' ')} (measured, not judged):")
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
