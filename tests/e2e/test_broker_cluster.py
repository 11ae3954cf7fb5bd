"""A worker given a cluster's three addresses keeps working when the node it is connected to
stops (issue 15): a private three-node RabbitMQ cluster (``bench/chaos/rabbit_cluster.py``), the
worker from the shipped wheel, events published before and after the node goes away."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kombu import Connection
from sqlalchemy import func, select

from bench.chaos.rabbit_cluster import RabbitCluster
from models.events import InboxEvent
from models.outcomes import Outcome
from models.session import unit_of_work
from tests.conftest import SANDBOX_PASSWORD, SANDBOX_USER
from tests.factories import events
from tests.workers import Workers, wait_for
from worker.queues import DELAYED_PREFIX

pytestmark = pytest.mark.e2e
MOBILE = "919700000015"
ORDERS_BEFORE = ORDERS_AFTER = 5


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    """One private cluster for the module: starting one takes the most time here."""
    with RabbitCluster(3) as started:
        yield started


@pytest.fixture
def cluster_workers(cluster, pg_service_url, sandbox, clean_db, tmp_path) -> Iterator[Workers]:
    env = {
        "RECON_DATABASE_URL": pg_service_url,
        "RECON_BROKER_URL": cluster.broker_url,
        "LOYALTY_API_URL": sandbox.url,
        "LOYALTY_API_USERNAME": SANDBOX_USER,
        "LOYALTY_API_PASSWORD": SANDBOX_PASSWORD,
        "RECON_LOG_LEVEL": "INFO",
    }
    pool = Workers(env, tmp_path)
    pool.declare()
    yield pool
    pool.stop()


def orders(first: int, count: int, sandbox) -> list[bytes]:
    bodies = []
    for n in range(first, first + count):
        sandbox.register_coupon(15_000 + n, MOBILE)
        bodies.append(events.body(events.coupon_redeemed(f"clu-{n}", 15_000 + n, MOBILE)))
        bodies.append(events.body(events.transaction_completed(f"clu-{n}", MOBILE)))
    return bodies


def outcomes(engine) -> list[tuple[str, int | None, str]]:
    with unit_of_work(engine) as session:
        return sorted((o.redemption_id, o.code, o.status) for o in session.scalars(select(Outcome)))


def stored(engine) -> int:
    with unit_of_work(engine) as session:
        return int(session.scalar(select(func.count()).select_from(InboxEvent)) or 0)


def queued(workers: Workers, cluster: RabbitCluster) -> int:
    """Messages waiting or held in every work queue and the delayed-delivery queues (asked of
    the queues themselves: a quorum queue's count in `rabbitmqctl` lags)."""
    names = [*workers.work_queues(), *(f"{DELAYED_PREFIX}{level}" for level in range(28))]
    total = 0
    with Connection(cluster.broker_url, connect_timeout=5) as conn:
        for name in names:
            channel = conn.channel()
            try:
                total += channel.queue_declare(name, passive=True)[1]
            finally:
                channel.close()
    return total


def test_a_worker_keeps_consuming_when_its_broker_node_stops(
    cluster, cluster_workers, clean_db, sandbox
):
    worker = cluster_workers.start("clu1")
    wait_for(lambda: cluster.connected_nodes("/"), timeout=90, interval=0.5)
    cluster_workers.publish(*orders(0, ORDERS_BEFORE, sandbox))
    wait_for(lambda: len(outcomes(clean_db)) == ORDERS_BEFORE, timeout=90, interval=0.5)

    [node] = cluster.connected_nodes("/")  # the worker's connections, all on one node
    cluster.stop_node(node)
    cluster_workers.publish(*orders(ORDERS_BEFORE, ORDERS_AFTER, sandbox))

    everything = ORDERS_BEFORE + ORDERS_AFTER
    wait_for(lambda: len(outcomes(clean_db)) >= everything, timeout=120, interval=0.5)
    wait_for(lambda: queued(cluster_workers, cluster) == 0, timeout=60, interval=0.5)
    assert worker.poll() is None, "the worker exited: it needed a restart"
    assert node not in cluster.connected_nodes("/")
    assert stored(clean_db) == 2 * everything
    # Each coupon attached once: one outcome per redemption, no second call.
    assert outcomes(clean_db) == sorted(
        (str(15_000 + n), 761, "succeeded") for n in range(everything)
    )
    assert all(sandbox.coupon(15_000 + n)["update_count"] == 1 for n in range(everything))
