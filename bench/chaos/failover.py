"""Phase (g): the database fails over to its standby. Two runs, each on a fresh private pair.

**failover** (the targets): orders flow; the primary is stopped (fast shutdown: sessions cut) and
stays down; after ``detect_s`` (a failover manager noticing) the standby is promoted. The workers
and beat were given both hosts (``target_session_attrs=read-write``) and nothing else: no restart,
no new URL. Recovery counts from the promotion.

**lagging standby**, asynchronous then synchronous (measurements, not judged against the targets:
``bench/chaos/lagging.py``): what a standby that is behind when the primary *dies* loses.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, text

from bench import infra
from bench.chaos import lagging
from bench.chaos.harness import (
    Publisher,
    Stack,
    by_order,
    figures,
    traffic,
    wait_settled,
)
from bench.chaos.pg_standby import StandbyPair, backend, delete_vhost
from bench.chaos.phases import RECOVERY_TARGET_S, _dead_letters, _publish_paced


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
    for key, synchronous in (("lagging_standby", False), ("lagging_synchronous_standby", True)):
        try:
            measured = lagging.run(
                sandbox,
                log_dir,
                orders=lag_orders,
                hold_s=hold_s,
                budget=budget,
                synchronous=synchronous,
            )
        except Exception as exc:  # the measurement must not hide the judged run's figures
            measured = {"error": f"{type(exc).__name__}: {exc}"}
        lagging.show(key, measured)
        result[key] = measured
    return result


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
        database_url, broker_url, vhost = backend(pair, "ha")
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
        delete_vhost(vhost)


def _writer_port(engine: Engine) -> int | None:
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT inet_server_port()")).scalar() or 0)
    except Exception:
        return None
