"""(f) a broker node lost for good: a private three-node RabbitMQ cluster, workers given all three
addresses, and mid-run the node that leads a queue is stopped and stays down.

Two runs, each with its own traffic (orders paced over ``pace_s`` seconds):

1. the node leading the task queue ``recon.reconcile`` stops at 40 % of the publication;
2. that node is started again (it rejoins), then the node leading ``recon.events`` stops.

Each node stays down until its run ends. Stopping a second node while the first is still down
would leave one node of three: no quorum queue can work without a majority, which is the
cluster's documented limit, not a fault of the product. The figures are those of every phase
(lost, doubled, not terminal, recovery from the loss, manual restarts), per run.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from bench import infra
from bench.chaos.harness import (
    DEAD_QUEUE,
    Publisher,
    Stack,
    by_order,
    consuming,
    figures,
    traffic,
    wait_settled,
)
from bench.chaos.phases import RECOVERY_TARGET_S, _dead_letters, _publish_paced
from bench.chaos.rabbit_cluster import RabbitCluster
from tests import services
from worker.ops import migrate

#: The node goes down this far into the publication.
LOSS_AT = 0.4
LEADS = (infra.TASK_QUEUE, infra.EVENTS_QUEUE)


def cluster(
    sandbox: infra.SandboxProcess, log_dir: Path, *, orders: int, pace_s: float
) -> dict[str, Any]:
    began = time.monotonic()
    nodes = RabbitCluster(3).start()
    print(f"    three-node cluster up in {time.monotonic() - began:.0f} s", flush=True)
    database_url = services.create_database("recon_chaos_cluster")
    migrate.upgrade(database_url)
    scenarios = [traffic(orders, prefix=f"clu{n}", seed=61 + n) for n in range(len(LEADS))]
    stack = Stack("cluster", database_url, nodes.broker_url, sandbox, log_dir)
    runs: list[dict[str, Any]] = []
    try:
        fleet, engine = stack.start(scenarios)
        for number, (queue, scenario) in enumerate(zip(LEADS, scenarios, strict=True)):
            if nodes.down:  # the previous run's node comes back before this run starts
                for index in sorted(nodes.down):
                    nodes.start_node(index)
            prefix = f"clu{number}"
            manual_before = fleet.manual_restarts
            dead_before = _dead_letters(nodes.broker_url)
            publisher = Publisher(nodes.broker_url)
            groups = by_order(scenario)
            deadline = time.monotonic() + pace_s + 300
            feeder = threading.Thread(
                target=_publish_paced,
                args=(publisher, groups, len(groups) / pace_s, deadline),
                daemon=True,
            )
            feeder.start()
            _supervised_sleep(fleet, pace_s * LOSS_AT)
            leader = nodes.leader(queue)
            print(f"    stopping {nodes.nodes[leader].node}, leader of {queue}", flush=True)
            lost_at = time.monotonic()  # from the stop's start: a node shutting down is gone
            nodes.stop_node(leader)
            print(f"    stopped in {time.monotonic() - lost_at:.1f} s", flush=True)
            reconsuming = None  # until every worker consumes both queues again
            while feeder.is_alive() or reconsuming is None:
                fleet.supervise()
                if reconsuming is None and consuming(nodes.broker_url, fleet.count):
                    reconsuming = round(time.monotonic() - lost_at, 1)
                if time.monotonic() > lost_at + RECOVERY_TARGET_S:
                    break
                feeder.join(timeout=0.5)
            feeder.join(timeout=max(0.0, deadline - time.monotonic()))
            recovery = wait_settled(
                engine,
                prefix,
                scenario,
                since=lost_at,
                timeout=RECOVERY_TARGET_S + 60,
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
                dead_lettered=_dead_letters(nodes.broker_url) - dead_before,
            )
            result.update(
                dead_letter_reasons=_dead_reasons(nodes.broker_url),
                label=f"leader of {queue} stopped",
                workers_reconsuming_s=reconsuming,
                stopped_leader_of=queue,
                node_down_s=round(time.monotonic() - lost_at, 1),
                tasks_failed=fleet.task_failures(),
                unexpected_exits=list(fleet.unexpected_exits),
            )
            runs.append(result)
        return {"runs": runs}
    finally:
        stack.close()
        nodes.close()
        try:
            services.drop_database(database_url)
        except Exception as exc:  # cleanup must not hide the phase's result
            print(f"    cleanup: {exc}", flush=True)


def _dead_reasons(broker_url: str) -> dict[str, int]:
    """Why what waits in recon.dead died: (queue, reason) of its death, or the intake's reason.
    Read unacked and given back (the channel closes), so nothing is taken."""
    from collections import Counter

    from kombu import Connection

    reasons: Counter[str] = Counter()
    with Connection(broker_url, connect_timeout=5) as conn:
        channel = conn.channel()
        try:
            while (message := channel.basic_get(DEAD_QUEUE, no_ack=False)) is not None:
                headers = message.properties.get("application_headers") or {}
                deaths = headers.get("x-death") or [{}]
                why = headers.get("x-recon-reason") or deaths[0].get("reason")
                reasons[f"{deaths[0].get('queue', 'intake')}: {str(why)[:80]}"] += 1
        finally:
            channel.close()
    return dict(reasons)


def _supervised_sleep(fleet: Any, seconds: float) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        fleet.supervise()
        time.sleep(0.5)
