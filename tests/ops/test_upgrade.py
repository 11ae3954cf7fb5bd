"""`recon declare --upgrade` on real RabbitMQ: a vhost holding release 0.2's topology (classic
task and dead-letter queues, a direct task exchange) and messages in it comes out with quorum
queues and a topic exchange, every message still there, routing key and headers kept."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from kombu import Connection, Exchange, Producer, Queue

from tests import services
from tests.shipped import RECON, product_env
from worker.queues import DEAD_EXCHANGE, DEAD_QUEUE, REDRIVE_QUEUE, TASK_QUEUE

pytestmark = pytest.mark.e2e

#: What release 0.2 declared (worker/queues.py at 0.2).
OLD_TASK_EXCHANGE = Exchange("recon", type="direct", durable=True)
OLD_DEAD_LETTERED = {"x-dead-letter-exchange": DEAD_EXCHANGE.name}
DEATH = [{"queue": "recon.events", "reason": "delivery_limit", "count": 1, "exchange": "orders"}]


@pytest.fixture
def old_vhost() -> Iterator[tuple[str, str]]:
    """A vhost with 0.2's topology: 3 tasks waiting in recon.reconcile, 2 in recon.redrive, one
    dead letter in recon.dead."""
    url, vhost = services.create_vhost("recon_upgrade")
    with Connection(url, transport_options={"confirm_publish": True}) as conn:
        channel = conn.channel()
        DEAD_EXCHANGE(channel).declare()
        Queue(DEAD_QUEUE.name, DEAD_EXCHANGE, durable=True)(channel).declare()
        producer = Producer(channel)
        for name, count in ((TASK_QUEUE, 3), (REDRIVE_QUEUE, 2)):
            old = Queue(name, OLD_TASK_EXCHANGE, routing_key=name, durable=True,
                        queue_arguments=OLD_DEAD_LETTERED)  # fmt: skip
            old(channel).declare()
            for n in range(count):
                producer.publish(
                    f'[["ORD-{name}-{n}"], {{}}, {{}}]',
                    exchange=OLD_TASK_EXCHANGE,
                    routing_key=name,
                    headers={"task": "recon.reconcile_order", "id": f"{name}-{n}"},
                    content_type="application/json",
                    delivery_mode=2,
                )
        producer.publish(
            b"not json", exchange=DEAD_EXCHANGE, routing_key="coupon.redeemed",
            headers={"x-death": DEATH}, delivery_mode=2,
        )  # fmt: skip
    yield url, vhost
    services.delete_vhost(vhost)


def queues(url: str, vhost: str) -> dict[str, tuple[str, int]]:
    """Type (from rabbitmqctl) and messages (asked of the queue: rabbitmqctl's count of a quorum
    queue is a metric that lags) of every queue in ``vhost``."""
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "--no-table-headers", "name", "type"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    kinds = dict(line.split("\t") for line in listing.splitlines() if "\t" in line)
    with Connection(url) as conn:
        channel = conn.channel()
        return {
            name: (kind, channel.queue_declare(name, passive=True)[1])
            for name, kind in kinds.items()
        }


def declare(tmp_path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return recon(tmp_path, url, "declare", *args)


def recon(tmp_path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"RECON_BROKER_URL": url, "RECON_DATABASE_URL": f"sqlite:///{tmp_path / 'r.sqlite3'}"}
    return subprocess.run(
        [RECON, *args],
        env=product_env(env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_upgrade_from_0_2_keeps_every_message_and_makes_every_queue_quorum(tmp_path, old_vhost):
    url, vhost = old_vhost
    plain = declare(tmp_path, url)
    assert plain.returncode != 0, "declaring over 0.2's queues must fail, not change them"
    assert "recon declare --upgrade" in plain.stderr
    worker = recon(tmp_path, url, "worker", "-c", "1")  # a 0.3 worker started too early
    assert worker.returncode == 1
    assert "recon.reconcile, recon.redrive, recon.dead exist(s) declared otherwise" in worker.stderr
    assert "recon declare --upgrade" in worker.stderr

    with Connection(url) as conn:  # a 0.2 worker still running
        channel = conn.channel()
        channel.basic_consume(TASK_QUEUE, callback=lambda *_: None)
        refused = declare(tmp_path, url, "--upgrade")
        channel.close()
    assert refused.returncode == 1
    assert "stop every worker" in refused.stderr

    done = declare(tmp_path, url, "--upgrade")
    assert done.returncode == 0, done.stderr
    assert f"{TASK_QUEUE}: quorum, 3 message(s) moved over" in done.stdout
    state = queues(url, vhost)
    assert state[TASK_QUEUE] == ("quorum", 3)
    assert state[REDRIVE_QUEUE] == ("quorum", 2)
    assert state[DEAD_QUEUE.name] == ("quorum", 1)
    assert not [name for name in state if name.endswith(".upgrade")]

    with Connection(url) as conn:
        channel = conn.channel()
        channel.exchange_declare("recon", "topic", durable=True, auto_delete=False)
        channel.auto_decode = False
        task = channel.basic_get(TASK_QUEUE, no_ack=False)
        assert task.body == b'[["ORD-recon.reconcile-0"], {}, {}]'
        assert task.properties["application_headers"]["id"] == "recon.reconcile-0"
        dead = channel.basic_get(DEAD_QUEUE.name, no_ack=False)
        assert dead.body == b"not json"
        assert dead.delivery_info["routing_key"] == "coupon.redeemed"
        assert dead.properties["application_headers"]["x-death"][0]["reason"] == "delivery_limit"
        channel.close()  # unacked: both go back

    again = declare(tmp_path, url, "--upgrade")  # nothing left to move: a no-op
    assert again.returncode == 0, again.stderr
    assert queues(url, vhost)[TASK_QUEUE] == ("quorum", 3)
