"""What every chaos phase shares: a stack of real parts, its traffic, and the accounting.

A :class:`Stack` is one database, one broker vhost (or private node), the sandbox, N supervised
``recon worker`` processes and one ``recon beat`` (the sweeper, default settings). The
supervisor stands in for systemd's ``Restart=always``: a main process the phase killed is
started again; a process that *exited by itself* or stopped consuming is what the phase reports
as "needed a manual restart".
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from kombu import Connection, Exchange, Producer
from sqlalchemy import Engine, text

from bench import infra
from models.session import build_engine
from worker.tools.publishing import dumps
from worker.tools.scenario import Scenario, build_scenario, register_with_sandbox

FINAL = ("succeeded", "failed", "gave_up", "unknown", "skipped")
DEAD_QUEUE = "recon.dead"
#: Never binding in these phases: the rate limit has its own phase in `make bench`.
UNBINDING_RATE_LIMIT = 100_000  # the most LOYALTY_RATE_LIMIT_PER_MINUTE allows


def traffic(orders: int, *, prefix: str, seed: int) -> Scenario:
    """Per order: one coupon, a points redemption made at the till on half of them, the bill,
    and a ``points.redeem_requested`` (a points redeem call, the one that must never repeat)."""
    return build_scenario(
        orders,
        seed=seed,
        coupons_per_order=(1, 1),
        points_share=0.5,
        duplicate_share=0.0,
        redeem_requests=orders,
        shuffle=False,
        prefix=prefix,
    )


def by_order(scenario: Scenario) -> list[list[bytes]]:
    """The scenario's bodies grouped per order, each order's events together."""
    groups: dict[str, list[bytes]] = {}
    for event in scenario.events:
        groups.setdefault(event["order_ref"], []).append(dumps(event))
    return list(groups.values())


class Publisher:
    """Confirmed publishes (``confirm_publish``): a message counts as published only once the
    broker has taken it, so ``published - stored - dead-lettered`` is exactly what was lost."""

    def __init__(self, broker_url: str, exchange: str = infra.EVENTS_EXCHANGE) -> None:
        self.broker_url = broker_url
        self.exchange = Exchange(exchange, type="topic", durable=True)
        self.published = 0
        #: Wall-clock time each body was confirmed (for per-order latency).
        self.published_at: dict[bytes, float] = {}

    def send(
        self,
        items: Iterable[tuple[bytes, str]],
        *,
        deadline: float | None = None,
        per_s: float | None = None,
    ) -> int:
        """Publish (body, routing key) pairs, spread at ``per_s`` if given; a broker outage is
        waited out (until ``deadline``, monotonic), the message in hand sent again after it."""
        pending = list(items)
        index = 0
        start = time.monotonic()
        while index < len(pending):
            try:
                with (
                    Connection(
                        self.broker_url,
                        connect_timeout=5,
                        transport_options={"confirm_publish": True},
                    ) as conn,
                    conn.channel() as channel,
                ):
                    producer = Producer(channel, exchange=self.exchange)
                    self.exchange(channel).declare()
                    while index < len(pending):
                        body, key = pending[index]
                        if per_s:
                            pause = start + index / per_s - time.monotonic()
                            if pause > 0:
                                time.sleep(pause)
                        producer.publish(
                            body,
                            routing_key=key,
                            content_type="application/json",
                            content_encoding="utf-8",
                            delivery_mode=2,
                        )
                        index += 1
                        self.published += 1
                        self.published_at[body] = time.time()
            except Exception:
                if deadline is not None and time.monotonic() > deadline:
                    raise
                time.sleep(1.0)
        return index


def order_latencies(
    engine: Engine, prefix: str, scenario: Scenario, publisher: Publisher
) -> dict[str, float | None]:
    """Per order: last outcome row - the moment its last event was confirmed by the broker."""
    last_publish: dict[str, float] = {}
    for event in scenario.events:
        at = publisher.published_at.get(dumps(event))
        if at is not None:
            ref = str(event["order_ref"])
            last_publish[ref] = max(at, last_publish.get(ref, 0.0))
    with engine.connect() as conn:
        done = conn.execute(
            text(
                "SELECT order_ref, extract(epoch FROM max(at)) FROM outcomes "
                "WHERE order_ref LIKE :like GROUP BY order_ref"
            ),
            {"like": f"{prefix}-%"},
        ).all()
    values = sorted(
        max(0.0, float(at) - last_publish[ref]) for ref, at in done if ref in last_publish
    )
    if not values:
        return {"p50": None, "p95": None, "mean": None}
    return {
        "p50": round(values[len(values) // 2], 2),
        "p95": round(values[min(len(values) - 1, round(0.95 * (len(values) - 1)))], 2),
        "mean": round(sum(values) / len(values), 2),
    }


def routed(bodies: Iterable[bytes]) -> list[tuple[bytes, str]]:
    import json

    out = []
    for body in bodies:
        out.append((body, json.loads(body)["type"]))
    return out


# --------------------------------------------------------------------------- processes


@dataclass
class Fleet:
    """``recon worker`` processes (each its own process group) and one ``recon beat``."""

    env: dict[str, str]
    log_dir: Path
    name: str
    count: int = 2
    concurrency: int = 2
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    beat: subprocess.Popen[bytes] | None = None
    killed: set[int] = field(default_factory=set)  # pids this phase SIGKILLed on purpose
    supervisor_restarts: int = 0
    manual_restarts: int = 0
    orphans: list[psutil.Process] = field(default_factory=list)
    #: Processes that exited although this phase did not kill them: (role, exit code, last log
    #: line). Each one counts as a manual restart.
    unexpected_exits: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _generation: int = 0

    def _spawn(self, slot: int) -> subprocess.Popen[bytes]:
        self._generation += 1
        log = self.log_dir / f"{self.name}-worker{slot + 1}.log"
        with log.open("ab") as out:
            return subprocess.Popen(
                [
                    infra.RECON,
                    "worker",
                    "-c",
                    str(self.concurrency),
                    "-n",
                    f"{self.name}{slot + 1}g{self._generation}@%h",
                ],
                cwd=infra.ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for old in self.log_dir.glob(f"{self.name}-*"):  # logs of this run only
            old.unlink()
        for slot in range(self.count):
            self.procs.append(self._spawn(slot))
        with (self.log_dir / f"{self.name}-beat.log").open("ab") as out:
            self.beat = subprocess.Popen(
                [infra.RECON, "beat", "-s", str(self.log_dir / f"{self.name}-beat-schedule")],
                cwd=infra.ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def age(self, slot: int) -> float:
        """Seconds since the worker in ``slot`` was started."""
        with contextlib.suppress(psutil.Error):
            return time.time() - psutil.Process(self.procs[slot].pid).create_time()
        return 0.0

    def pool(self, slot: int) -> list[psutil.Process]:
        with contextlib.suppress(psutil.Error):
            return psutil.Process(self.procs[slot].pid).children(recursive=True)
        return []

    def kill(self, slot: int, what: str) -> list[int]:
        """SIGKILL the pool processes, the main process, or the whole process group of a worker.
        Returns the pids signalled."""
        self.supervise()  # a worker that exited on its own is counted as such, not as killed
        proc = self.procs[slot]
        children = self.pool(slot)
        with self._lock:
            if what == "pool":
                pids = [c.pid for c in children]
                for child in children:
                    with contextlib.suppress(psutil.Error):
                        child.kill()
            elif what == "main":
                pids = [proc.pid]
                self.killed.add(proc.pid)
                # The orphaned pool processes are left to behave as they will (as in
                # production); they are reaped at the end of the phase.
                self.orphans.extend(children)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            else:
                pids = [proc.pid, *(c.pid for c in children)]
                self.killed.add(proc.pid)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)  # its own session: pgid == pid
        return pids

    def supervise(self) -> None:
        """Start again what this phase killed (the init system's job); anything else that
        exited is counted as a manual restart, then started again so the phase can go on."""
        with self._lock:
            for slot, proc in enumerate(self.procs):
                if proc.poll() is None:
                    continue
                if proc.pid in self.killed:
                    self.supervisor_restarts += 1
                else:
                    self.manual_restarts += 1
                    self.unexpected_exits.append(
                        {"role": f"worker{slot + 1}", "exit_code": proc.returncode}
                    )
                self.procs[slot] = self._spawn(slot)
            if self.beat is not None and self.beat.poll() is not None:
                self.manual_restarts += 1
                self.unexpected_exits.append({"role": "beat", "exit_code": self.beat.returncode})
                with (self.log_dir / f"{self.name}-beat.log").open("ab") as out:
                    self.beat = subprocess.Popen(
                        [
                            infra.RECON,
                            "beat",
                            "-s",
                            str(self.log_dir / f"{self.name}-beat-schedule"),
                        ],
                        cwd=infra.ROOT,
                        env=self.env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )

    def task_failures(self) -> int:
        """Tasks Celery recorded as failed ("raised unexpected") in this run's worker logs: a
        task that meets a fault should be retried, not failed."""
        return sum(
            log.read_text(errors="replace").count("raised unexpected")
            for log in self.log_dir.glob(f"{self.name}-worker*.log")
        )

    def restart_all(self) -> None:
        """A manual restart of every worker (counted), for a worker that is alive but stuck."""
        with self._lock:
            for slot, proc in enumerate(self.procs):
                self.manual_restarts += 1
                infra._stop_tree(proc, grace=10)
                self.procs[slot] = self._spawn(slot)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            infra._stop_tree(proc, grace=15, signal_first=False)
        if self.beat is not None:
            infra._stop_tree(self.beat, grace=10)
        for orphan in self.orphans:
            with contextlib.suppress(psutil.Error):
                orphan.kill()
        psutil.wait_procs(self.orphans, timeout=5)


# --------------------------------------------------------------------------- accounting


def queue_state(broker_url: str, name: str) -> tuple[int, int] | None:
    """(messages ready, consumers), or None when the queue does not exist or the broker is down."""
    try:
        with Connection(broker_url, connect_timeout=3) as conn:
            channel = conn.channel()
            try:
                ok = channel.queue_declare(queue=name, passive=True)
                return int(ok.message_count), int(ok.consumer_count)
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
    except Exception:
        return None


def consuming(broker_url: str, workers: int) -> bool:
    events = queue_state(broker_url, infra.EVENTS_QUEUE)
    tasks = queue_state(broker_url, infra.TASK_QUEUE)
    return bool(events and tasks and events[1] >= workers and tasks[1] >= workers)


def counts(engine: Engine, prefix: str) -> dict[str, Any]:
    """Stored messages and work states of the orders whose refs start with ``prefix``. Items
    are the redemptions made at the till (coupons, points) and the points redeem requests; the
    redemption row a successful redeem request creates is the same item, not another one."""
    like = {"like": f"{prefix}-%"}
    final = ", ".join(f"'{s}'" for s in FINAL)
    with engine.connect() as conn:
        stored = conn.execute(
            text("SELECT count(*) FROM inbox_events WHERE order_ref LIKE :like"), like
        ).scalar()
        items = conn.execute(
            text(
                f"SELECT count(*) FILTER (WHERE state IN ({final})), "
                f"count(*) FILTER (WHERE state NOT IN ({final})), "
                "count(*) FILTER (WHERE state = 'succeeded'), "
                "count(*) FILTER (WHERE state IN ('unknown', 'gave_up')) "
                "FROM redemptions r WHERE order_ref LIKE :like AND NOT EXISTS ("
                "SELECT 1 FROM points_redeem_requests q WHERE q.redemption_ref = r.id)"
            ),
            like,
        ).one()
        redeems = conn.execute(
            text(
                f"SELECT count(*) FILTER (WHERE state IN ({final})), "
                f"count(*) FILTER (WHERE state NOT IN ({final})), "
                "count(*) FILTER (WHERE state = 'succeeded'), "
                "count(*) FILTER (WHERE state IN ('unknown', 'gave_up')) "
                "FROM points_redeem_requests WHERE order_ref LIKE :like"
            ),
            like,
        ).one()
        references = {
            str(ref)
            for (ref,) in conn.execute(
                text(
                    "SELECT external_reference_number FROM points_redeem_requests "
                    "WHERE order_ref LIKE :like"
                ),
                like,
            ).all()
        }
    return {
        "stored": int(stored or 0),
        "items": int(items[0] + items[1] + redeems[0] + redeems[1]),
        "terminal": int(items[0] + redeems[0]),
        "open": int(items[1] + redeems[1]),
        "succeeded": int(items[2] + redeems[2]),
        "unknown_or_gave_up": int(items[3] + redeems[3]),
        "redeems": int(redeems[0] + redeems[1]),
        "redeems_succeeded": int(redeems[2]),
        "references": references,
    }


def settled(engine: Engine, prefix: str, scenario: Scenario) -> bool:
    return _unsettled(engine, prefix, scenario) == 0


def _unsettled(engine: Engine, prefix: str, scenario: Scenario) -> int | None:
    """Messages not yet stored + items not yet terminal (None while the database is down)."""
    try:
        state = counts(engine, prefix)
    except Exception:  # the database may be the thing that is down
        return None
    expected_items = scenario.items + scenario.redeem_requests
    return (
        max(0, len(scenario.events) - state["stored"])
        + max(0, expected_items - state["items"])
        + state["open"]
    )


def wait_settled(
    engine: Engine,
    prefix: str,
    scenario: Scenario,
    *,
    since: float,
    timeout: float,
    fleet: Fleet | None = None,
    trace: list[tuple[float, int | None]] | None = None,
) -> float | None:
    """Seconds from ``since`` (monotonic) until every message is stored and every item
    terminal; None when ``timeout`` (from now) passed first. The supervisor runs meanwhile.
    ``trace`` gets (seconds since ``since``, messages + items still open) every ~5 s."""
    deadline = time.monotonic() + timeout
    last_trace = 0.0
    while time.monotonic() < deadline:
        if fleet is not None:
            fleet.supervise()
        left = _unsettled(engine, prefix, scenario)
        now = time.monotonic()
        if trace is not None and (now - last_trace >= 5.0 or left == 0):
            trace.append((round(now - since, 1), left))
            last_trace = now
        if left == 0:
            return round(now - since, 1)
        time.sleep(0.5)
    return None


def redeem_audit(stats: dict[str, Any], references: set[str]) -> dict[str, int]:
    """What the sandbox actually did for these requests (their external reference numbers):
    effects per reference. Any number above one is points taken twice for one request."""
    effects = {k: int(v) for k, v in stats.get("redeem_effects", {}).items() if k in references}
    requests = {k: int(v) for k, v in stats.get("redeem_requests", {}).items() if k in references}
    return {
        "redeem_requests_sent": sum(requests.values()),
        "redeem_effects": sum(effects.values()),
        "redeemed_references": len(effects),
        "doubled": sum(1 for n in effects.values() if n > 1),
        "redeem_replays_all_runs": int(stats.get("redeem_replays", 0)),
    }


def figures(
    engine: Engine,
    prefix: str,
    scenario: Scenario,
    published: int,
    stats: dict[str, Any],
    *,
    recovery_s: float | None,
    manual_restarts: int,
    dead_lettered: int = 0,
) -> dict[str, Any]:
    """The five figures every phase reports, next to their targets."""
    state = counts(engine, prefix)
    audit = redeem_audit(stats, state["references"])
    # A redeem the platform applied that our database does not call succeeded: taken, but not
    # on record (it would show as `unknown` for an operator, or be lost).
    unrecorded = max(0, audit["redeemed_references"] - state["redeems_succeeded"])
    expected = scenario.items + scenario.redeem_requests
    return {
        "messages_published": published,
        "messages_stored": state["stored"],
        "messages_dead_lettered": dead_lettered,
        "messages_lost": max(0, published - state["stored"] - dead_lettered),
        "double_redemptions": audit["doubled"],
        "items": expected,
        "items_terminal": state["terminal"],
        "items_not_terminal": state["open"] + max(0, expected - state["items"]),
        "items_unknown_or_gave_up": state["unknown_or_gave_up"],
        "redeems_applied_not_recorded_succeeded": unrecorded,
        "recovery_s": recovery_s,
        "manual_restarts": manual_restarts,
        **{f"sandbox_{k}": v for k, v in audit.items() if k != "doubled"},
    }


@dataclass
class Stack:
    """Database + broker + sandbox + fleet for one phase; ``close`` undoes all of it."""

    name: str
    database_url: str
    broker_url: str
    sandbox: infra.SandboxProcess
    log_dir: Path
    workers: int = 2
    concurrency: int = 2
    extra_env: dict[str, str] = field(default_factory=dict)
    engine: Engine | None = None
    fleet: Fleet | None = None

    def start(self, scenarios: Iterable[Scenario]) -> tuple[Fleet, Engine]:
        self.sandbox.reset(rate_limit_per_minute=0)
        for scenario in scenarios:
            register_with_sandbox(scenario, self.sandbox.url)
        self.engine = build_engine(self.database_url, pool_size=1, max_overflow=1)
        env = {
            **os.environ,
            "RECON_DATABASE_URL": self.database_url,
            "RECON_BROKER_URL": self.broker_url,
            "LOYALTY_API_URL": self.sandbox.url,
            "LOYALTY_API_USERNAME": infra.USERNAME,
            "LOYALTY_API_PASSWORD": infra.PASSWORD,
            "LOYALTY_RATE_LIMIT_PER_MINUTE": str(UNBINDING_RATE_LIMIT),
            "RECON_LOG_LEVEL": "WARNING",
            **self.extra_env,
        }
        self.fleet = Fleet(
            env, self.log_dir, self.name, count=self.workers, concurrency=self.concurrency
        )
        self.fleet.start()
        infra.wait_until(
            "the workers to consume",
            lambda: consuming(self.broker_url, self.workers),
            timeout=90,
            every=0.5,
        )
        return self.fleet, self.engine

    def close(self) -> None:
        if self.fleet is not None:
            self.fleet.stop()
        if self.engine is not None:
            self.engine.dispose()
