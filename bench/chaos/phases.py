"""The five phases of ``make chaos``. Each returns its figures; each has a hard deadline.

(a) kills: SIGKILL of pool processes, main processes and whole process groups, ten times while
    1,000 orders (with points redeem calls) flow; half the kills land while a redeem call is in
    flight (the sandbox holds those calls for a few seconds).
(b) broker: a private RabbitMQ node down for 20 s, then for 5 minutes.
(c) database: a private PostgreSQL cluster restarted, sweeper at its default settings.
(d) platform: 20 % 5xx, answers slower than the client's time-out, answers lost after the
    effect, bursts of 429.
(e) hostile: 10,000 unique hostile messages interleaved with 150 valid orders, against a
    baseline of the same orders alone.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import text

from bench import infra
from bench.chaos import hostile
from bench.chaos.harness import (
    DEAD_QUEUE,
    Publisher,
    Stack,
    by_order,
    consuming,
    counts,
    figures,
    order_latencies,
    queue_state,
    routed,
    traffic,
    wait_settled,
)
from bench.chaos.private import PrivatePostgres, PrivateRabbit
from tests import services
from worker.ops import migrate

REDEEM_PATH = "/v1.1/points/redeem"
#: Items must all be terminal within this long after the fault ends (the target); the phase
#: waits a little longer so that a miss is measured rather than cut off.
RECOVERY_TARGET_S = 60.0
#: (a) a worker is struck only once it has been up this long (see the kill loop).
STARTUP_S = 15.0


def _shared_backend(prefix: str) -> tuple[str, str, str]:
    database_url = services.create_database(prefix)
    migrate.upgrade(database_url)
    broker_url, vhost = services.create_vhost(prefix)
    return database_url, broker_url, vhost


def _drop_shared(database_url: str, vhost: str) -> None:
    for action in (
        lambda: services.delete_vhost(vhost),
        lambda: services.drop_database(database_url),
    ):
        try:
            action()
        except Exception as exc:  # cleanup must not hide the phase's result
            print(f"    cleanup: {exc}", flush=True)


def _dead_letters(broker_url: str) -> int:
    """Messages waiting in ``recon.dead`` (0 when it does not exist: then nothing could be
    dead-lettered there, and a dead letter RabbitMQ dropped shows up as lost)."""
    state = queue_state(broker_url, DEAD_QUEUE)
    return state[0] if state else 0


def _publish_paced(
    publisher: Publisher, orders: list[list[bytes]], per_s: float, stop_at: float
) -> None:
    start = time.monotonic()
    for index, bodies in enumerate(orders):
        due = start + index / per_s
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        publisher.send(routed(bodies), deadline=stop_at)


# --------------------------------------------------------------------------- (a) kills


def kills(
    sandbox: infra.SandboxProcess, log_dir: Path, *, orders: int, kills: int
) -> dict[str, Any]:
    prefix = "kill"
    scenario = traffic(orders, prefix=prefix, seed=21)
    database_url, broker_url, vhost = _shared_backend("recon_chaos_kill")
    stack = Stack("kill", database_url, broker_url, sandbox, log_dir)
    hard_deadline = time.monotonic() + 420
    try:
        fleet, engine = stack.start([scenario])
        publisher = Publisher(broker_url)
        groups = by_order(scenario)
        per_s = 12.0
        feeder = threading.Thread(
            target=_publish_paced, args=(publisher, groups, per_s, hard_deadline), daemon=True
        )
        feeder.start()
        span = len(groups) / per_s
        rng = random.Random(5)
        log: list[dict[str, Any]] = []
        kinds = ["pool", "main", "group"]
        started = time.monotonic()
        for number in range(kills):
            # The kills are spread over the first 80 % of the publication.
            due = started + (number + 1) * 0.8 * span / kills
            while time.monotonic() < due:
                fleet.supervise()
                time.sleep(0.2)
            # Strike running workers, not one still starting: Celery checks once, as its
            # consumer starts, that no pool process has died, and exits with "Could not start
            # worker processes" otherwise (a supervisor restarts it). That is a start-up fault,
            # not the one this phase injects, so each worker gets STARTUP_S first.
            ready_by = time.monotonic() + 40
            while time.monotonic() < ready_by and not (
                consuming(broker_url, fleet.count)
                and all(len(fleet.pool(slot)) >= fleet.concurrency for slot in range(fleet.count))
                and all(fleet.age(slot) >= STARTUP_S for slot in range(fleet.count))
            ):
                fleet.supervise()
                time.sleep(0.2)
            what = kinds[number % 3]
            in_flight_wanted = number % 2 == 0
            in_flight = 0
            if in_flight_wanted:
                # Hold the next redeem calls for 4 s at the sandbox (effect applied after the
                # sleep), then strike while the database says a call is out.
                sandbox.admin(
                    "POST",
                    "script",
                    {"path": REDEEM_PATH, "faults": [{"action": "slow", "seconds": 4}] * 4},
                )
                wait_until = time.monotonic() + 15
                while time.monotonic() < wait_until:
                    with engine.connect() as conn:
                        in_flight = int(
                            conn.execute(
                                text(
                                    "SELECT count(*) FROM points_redeem_requests "
                                    "WHERE state = 'in_flight'"
                                )
                            ).scalar()
                            or 0
                        )
                    if in_flight:
                        break
                    time.sleep(0.1)
            # With a redeem call out, hit every worker (the one making it among them).
            slots = list(range(fleet.count)) if in_flight else [rng.randrange(fleet.count)]
            pids: list[int] = []
            for slot in slots:
                pids += fleet.kill(slot, what)
            log.append(
                {
                    "at_s": round(time.monotonic() - started, 1),
                    "what": what,
                    "workers": [s + 1 for s in slots],
                    "pids": pids,
                    "redeem_calls_in_flight": in_flight,
                }
            )
            print(
                f"    kill {number + 1}: {what} of worker(s) {[s + 1 for s in slots]}"
                f"{' during a redeem call' if in_flight else ''}",
                flush=True,
            )
            time.sleep(1.0)
            fleet.supervise()
        last_fault = time.monotonic()
        feeder.join(timeout=max(1.0, hard_deadline - time.monotonic()))
        # Recovery counts from the later of the last kill and the last order published: until
        # then the pipeline is still being fed.
        since = time.monotonic()
        trace: list[tuple[float, int | None]] = []
        recovery = wait_settled(
            engine,
            prefix,
            scenario,
            since=since,
            trace=trace,
            timeout=max(10.0, hard_deadline - time.monotonic()),
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
            orders=orders,
            kills=log,
            kills_during_redeem_call=sum(1 for k in log if k["redeem_calls_in_flight"]),
            supervisor_restarts=fleet.supervisor_restarts,
            unexpected_exits=fleet.unexpected_exits,
            publication_ended_s_after_last_kill=round(since - last_fault, 1),
            open_after_last_fault=trace,
        )
        return result
    finally:
        stack.close()
        _drop_shared(database_url, vhost)


# --------------------------------------------------------------------------- (b) broker


def broker(
    sandbox: infra.SandboxProcess, log_dir: Path, *, orders: int, outages: list[float]
) -> dict[str, Any]:
    """Per outage: half the orders published, the node stopped while they are worked, the
    other half published once it is back (the order system waits, as it must)."""
    rabbit = PrivateRabbit()
    database_url = services.create_database("recon_chaos_mq")
    migrate.upgrade(database_url)
    scenarios = [traffic(orders, prefix=f"mq{n}", seed=31 + n) for n in range(len(outages))]
    stack = Stack("mq", database_url, rabbit.broker_url, sandbox, log_dir)
    runs: list[dict[str, Any]] = []
    try:
        fleet, engine = stack.start(scenarios)
        for number, (outage, scenario) in enumerate(zip(outages, scenarios, strict=True)):
            prefix = f"mq{number}"
            hard_deadline = time.monotonic() + outage + 300
            publisher = Publisher(rabbit.broker_url)
            dead_before = _dead_letters(rabbit.broker_url)
            groups = by_order(scenario)
            half = len(groups) // 2
            _publish_paced(publisher, groups[:half], 25.0, hard_deadline)
            print(f"    broker down for {outage:.0f} s ...", flush=True)
            rabbit.stop()
            down_at = time.monotonic()
            while time.monotonic() < down_at + outage:
                time.sleep(1.0)
            rabbit.start()
            back = time.monotonic()
            print(f"    broker back after {back - down_at:.0f} s", flush=True)
            # Do the workers come back by themselves? (a stuck or exited one is a manual restart)
            manual_before = fleet.manual_restarts
            reconnect = None
            while time.monotonic() < back + RECOVERY_TARGET_S:
                exited = [p for p in fleet.procs if p.poll() is not None]
                if not exited and _consumers_back(rabbit.broker_url, fleet.count):
                    reconnect = round(time.monotonic() - back, 1)
                    break
                if exited:
                    fleet.supervise()
                time.sleep(0.5)
            if reconnect is None and fleet.manual_restarts == manual_before:
                fleet.restart_all()
            _publish_paced(publisher, groups[half:], 25.0, hard_deadline)
            recovery = wait_settled(
                engine,
                prefix,
                scenario,
                since=back,
                timeout=max(10.0, hard_deadline - time.monotonic()),
                fleet=fleet,
            )
            result = figures(
                engine,
                prefix,
                scenario,
                publisher.published,
                sandbox.stats(),
                recovery_s=recovery,
                manual_restarts=fleet.manual_restarts - manual_before,
                dead_lettered=_dead_letters(rabbit.broker_url) - dead_before,
            )
            result["tasks_failed"] = fleet.task_failures()
            result.update(outage_s=round(back - down_at, 1), workers_reconsuming_s=reconnect)
            # The sandbox's redeem audit is per run: clear it (the next run has its own refs).
            runs.append(result)
        return {"runs": runs}
    finally:
        stack.close()
        rabbit.close()
        try:
            services.drop_database(database_url)
        except Exception as exc:
            print(f"    cleanup: {exc}", flush=True)


def _consumers_back(broker_url: str, workers: int) -> bool:
    events = queue_state(broker_url, infra.EVENTS_QUEUE)
    tasks = queue_state(broker_url, infra.TASK_QUEUE)
    return bool(events and tasks and events[1] >= workers and tasks[1] >= workers)


# --------------------------------------------------------------------------- (c) database


def database(
    sandbox: infra.SandboxProcess, log_dir: Path, *, orders: int, down_s: float
) -> dict[str, Any]:
    """Orders flow; the private cluster is stopped (fast shutdown: sessions cut) mid-stream,
    kept down ``down_s`` and started again; the sweeper runs with its default settings."""
    postgres = PrivatePostgres()
    prefix = "pg"
    scenario = traffic(orders, prefix=prefix, seed=41)
    broker_url, vhost = services.create_vhost("recon_chaos_pg")
    hard_deadline = time.monotonic() + 420
    stack = None
    try:
        database_url = postgres.create_database("recon_chaos")
        migrate.upgrade(database_url)
        stack = Stack("pg", database_url, broker_url, sandbox, log_dir)
        fleet, engine = stack.start([scenario])
        publisher = Publisher(broker_url)
        groups = by_order(scenario)
        per_s = 10.0
        feeder = threading.Thread(
            target=_publish_paced, args=(publisher, groups, per_s, hard_deadline), daemon=True
        )
        feeder.start()
        time.sleep(len(groups) / per_s / 2)
        print(f"    PostgreSQL restart ({down_s:.0f} s down) ...", flush=True)
        postgres.stop()
        down_at = time.monotonic()
        time.sleep(down_s)
        postgres.start()
        back = time.monotonic()
        engine.dispose()
        feeder.join(timeout=max(1.0, hard_deadline - time.monotonic()))
        recovery = wait_settled(
            engine,
            prefix,
            scenario,
            since=back,
            timeout=max(10.0, hard_deadline - time.monotonic()),
            fleet=fleet,
        )
        stuck_alive = recovery is None and all(p.poll() is None for p in fleet.procs)
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
        with engine.connect() as conn:
            result["outcome_rows"] = int(
                conn.execute(text("SELECT count(*) FROM outcomes")).scalar() or 0
            )
        result.update(down_s=round(back - down_at, 1), stuck_at_deadline=stuck_alive)
        return result
    finally:
        if stack is not None:
            stack.close()
        postgres.close()
        try:
            services.delete_vhost(vhost)
        except Exception as exc:
            print(f"    cleanup: {exc}", flush=True)


# --------------------------------------------------------------------------- (d) platform


def platform(
    sandbox: infra.SandboxProcess, log_dir: Path, *, orders: int, timeout_s: float
) -> dict[str, Any]:
    """Random faults for the whole publication: 20 % 5xx, 5 % answers lost after the effect,
    5 % answers slower than the client's time-out; plus scripted 429 bursts on each endpoint."""
    prefix = "plat"
    scenario = traffic(orders, prefix=prefix, seed=51)
    database_url, broker_url, vhost = _shared_backend("recon_chaos_plat")
    stack = Stack(
        "plat",
        database_url,
        broker_url,
        sandbox,
        log_dir,
        extra_env={"LOYALTY_HTTP_TIMEOUT_SECONDS": str(timeout_s)},
    )
    hard_deadline = time.monotonic() + 360
    try:
        fleet, engine = stack.start([scenario])
        faults = {
            "error_rate": 0.20,
            "lost_rate": 0.05,
            "slow_rate": 0.05,
            "slow_seconds": timeout_s + 1.5,
            "seed": 9,
        }
        sandbox.admin("POST", "config", faults)
        publisher = Publisher(broker_url)
        groups = by_order(scenario)
        per_s = 10.0
        feeder = threading.Thread(
            target=_publish_paced, args=(publisher, groups, per_s, hard_deadline), daemon=True
        )
        feeder.start()
        bursts = 0
        span = len(groups) / per_s
        for number in range(3):
            time.sleep(span / 4)
            for path in ("/v2/coupon/redeem", "/v2/points/updateRedemption", REDEEM_PATH):
                sandbox.admin(
                    "POST",
                    "script",
                    {"path": path, "faults": [{"status": 429, "retry_after": 1}] * 10},
                )
                bursts += 1
            print(f"    429 burst {number + 1}", flush=True)
        feeder.join(timeout=max(1.0, hard_deadline - time.monotonic()))
        # Faults stay on until 90 % of the items are terminal, so that the bulk of the calls
        # meets them however slow the machine is; the rest (retries in back-off among them)
        # is the recovery.
        items = scenario.items + scenario.redeem_requests
        while time.monotonic() < hard_deadline - 120:
            state = counts(engine, prefix)
            if state["terminal"] >= 0.9 * items:
                break
            time.sleep(0.5)
        terminal_at_off = counts(engine, prefix)["terminal"]
        sandbox.admin(
            "POST", "config", {"error_rate": 0, "lost_rate": 0, "slow_rate": 0, "slow_seconds": 2}
        )
        faults_off = time.monotonic()
        recovery = wait_settled(
            engine,
            prefix,
            scenario,
            since=faults_off,
            timeout=max(10.0, hard_deadline - time.monotonic()),
            fleet=fleet,
        )
        stats = sandbox.stats()
        result = figures(
            engine,
            prefix,
            scenario,
            publisher.published,
            stats,
            recovery_s=recovery,
            manual_restarts=fleet.manual_restarts,
            dead_lettered=_dead_letters(broker_url),
        )
        result["tasks_failed"] = fleet.task_failures()
        result.update(
            faults={**faults, "client_timeout_s": timeout_s, "429_bursts": f"{bursts} x 10"},
            items_terminal_when_faults_off=terminal_at_off,
            sandbox_by_status=stats.get("by_status", {}),
        )
        return result
    finally:
        sandbox.admin(
            "POST", "config", {"error_rate": 0, "lost_rate": 0, "slow_rate": 0, "slow_seconds": 2}
        )
        stack.close()
        _drop_shared(database_url, vhost)


# --------------------------------------------------------------------------- (e) hostile


def hostile_input(
    sandbox: infra.SandboxProcess,
    log_dir: Path,
    *,
    orders: int,
    garbage: int,
    timeout: float,
    window_s: float = 60.0,
) -> dict[str, Any]:
    """A baseline (the valid orders alone), then the same number of other valid orders with
    ``garbage`` unique hostile messages spread evenly between their events. Both runs publish
    over the same ``window_s``, so the valid orders arrive at the same pace in both and the
    time to settle them compares like with like."""
    baseline = traffic(orders, prefix="base", seed=61)
    valid = traffic(orders, prefix="fuzz", seed=62)
    database_url, broker_url, vhost = _shared_backend("recon_chaos_fuzz")
    stack = Stack("fuzz", database_url, broker_url, sandbox, log_dir)
    try:
        fleet, engine = stack.start([baseline, valid])

        print(f"    baseline: {orders} valid orders alone ...", flush=True)
        base_pub = Publisher(broker_url)
        started = time.monotonic()
        base_bodies = routed(b for group in by_order(baseline) for b in group)
        base_pub.send(base_bodies, per_s=len(base_bodies) / window_s)
        base_s = wait_settled(
            engine, "base", baseline, since=started, timeout=timeout / 2, fleet=fleet
        )
        base_fig = figures(
            engine,
            "base",
            baseline,
            base_pub.published,
            sandbox.stats(),
            recovery_s=base_s,
            manual_restarts=fleet.manual_restarts,
        )
        with engine.connect() as conn:
            rows_before = int(conn.execute(text("SELECT count(*) FROM inbox_events")).scalar() or 0)
        dead_before = (queue_state(broker_url, DEAD_QUEUE) or (0, 0))[0]

        run = uuid.uuid4().hex[:6]
        junk = hostile.messages(garbage, run=run, seed=7)
        valid_bodies = [b for group in by_order(valid) for b in group]
        mixed = hostile.interleave(junk, routed(valid_bodies))
        kinds = hostile.kinds_of(junk)
        print(
            f"    {len(junk):,} hostile messages interleaved with {len(valid_bodies)} valid "
            f"events ({orders} orders) ...",
            flush=True,
        )
        publisher = Publisher(broker_url)
        started = time.monotonic()
        publisher.send(mixed, per_s=len(mixed) / window_s)
        publish_s = time.monotonic() - started
        fuzz_s = wait_settled(engine, "fuzz", valid, since=started, timeout=timeout, fleet=fleet)
        # Every hostile message must reach a fate too: wait (bounded) for the queue to drain.
        drain_deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < drain_deadline:
            state = queue_state(broker_url, infra.EVENTS_QUEUE)
            ready = state[0] if state else None
            if ready == 0:
                break
            time.sleep(1.0)
        time.sleep(2.0)  # acks of the last deliveries
        with engine.connect() as conn:
            rows = int(conn.execute(text("SELECT count(*) FROM inbox_events")).scalar() or 0)
        dead = (queue_state(broker_url, DEAD_QUEUE) or (0, 0))[0] - dead_before
        still_queued = (queue_state(broker_url, infra.EVENTS_QUEUE) or (0, 0))[0]
        stats = sandbox.stats()
        result = figures(
            engine,
            "fuzz",
            valid,
            len(valid_bodies),
            stats,
            recovery_s=fuzz_s,
            manual_restarts=fleet.manual_restarts,
        )
        result["tasks_failed"] = fleet.task_failures()
        stored_total = rows - rows_before
        result.update(
            hostile_messages=len(junk),
            hostile_kinds=kinds,
            published_total=publisher.published,
            inbox_rows=stored_total,
            dead_lettered=dead,
            still_queued=still_queued,
            # published = inbox rows + dead letters, exactly, when nothing is lost; a message
            # still queued at the deadline has no fate yet and is counted apart.
            messages_lost=max(0, publisher.published - stored_total - dead - still_queued),
            messages_without_fate=still_queued,
            valid_messages_lost=result["messages_lost"],
            publish_s=round(publish_s, 1),
            baseline_s=base_s,
            with_garbage_s=fuzz_s,
            slowdown=(round(fuzz_s / base_s, 2) if fuzz_s and base_s else None),
            # From the last publish (the end of the garbage) until the valid orders settled.
            recovery_s=(round(fuzz_s - publish_s, 1) if fuzz_s is not None else None),
            latency_per_order_s={
                "baseline": order_latencies(engine, "base", baseline, base_pub),
                "with_garbage": order_latencies(engine, "fuzz", valid, publisher),
            },
            baseline=base_fig,
        )
        return result
    finally:
        stack.close()
        _drop_shared(database_url, vhost)
