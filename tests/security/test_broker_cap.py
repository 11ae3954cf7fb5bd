"""No publisher can make a worker hold giant messages: the broker refuses a body over the intake's
limit (issue 13, finding 6: RabbitMQ took 128 MiB, and the intake holds 32 deliveries before it
can look at their size).

The cap is RabbitMQ's ``max_message_size``, a node setting; these tests run a private node started
with the very file compose mounts (deploy/rabbitmq/recon.conf), and the shared broker, which keeps
RabbitMQ's default, as the uncapped case.
"""

from __future__ import annotations

import subprocess

import pytest
import yaml
from amqp.exceptions import PreconditionFailed
from kombu import Connection, Exchange, Producer
from structlog.testing import capture_logs

from tests import shipped
from tests.security.conftest import RABBITMQ_CONF, ROOT
from tests.workers import wait_for
from worker.intake.consumer import check_message_cap
from worker.queues import declare_topology, events_queue

LIMIT = 256 * 1024  # the contract's limit, written out: the test holds it independently
EVENT_TYPES = ["coupon.redeemed"]


def recon(args: list[str], broker_url: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [shipped.RECON, *args],
        env=shipped.product_env({"RECON_BROKER_URL": broker_url}),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _publish(url: str, body: bytes) -> None:
    exchange = Exchange("orders", type="topic", durable=True)
    with Connection(url, transport_options={"confirm_publish": True}) as conn:
        events = events_queue(
            exchange="orders", queue="recon.events", routing_keys=EVENT_TYPES, delivery_limit=10
        )
        declare_topology(conn, events=events, task_queue_names=[])
        with conn.channel() as channel:
            Producer(channel, exchange=exchange).publish(
                body, routing_key="coupon.redeemed", delivery_mode=2
            )


def test_compose_gives_its_rabbitmq_node_the_cap_tested_here():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    volumes = compose["services"]["rabbitmq"]["volumes"]
    assert "./deploy/rabbitmq/recon.conf:/etc/rabbitmq/conf.d/90-recon.conf:ro" in volumes
    settings = [line.split("=") for line in RABBITMQ_CONF.read_text().splitlines()]
    assert {key.strip(): value.strip() for key, value in (s for s in settings if len(s) == 2)} == {
        "max_message_size": str(LIMIT)
    }


def test_a_body_over_the_limit_is_refused_at_publish_and_one_at_the_limit_is_taken(capped_rabbit):
    _publish(capped_rabbit.broker_url, b"x" * LIMIT)

    with pytest.raises(PreconditionFailed, match="larger than configured max size"):
        _publish(capped_rabbit.broker_url, b"x" * (LIMIT + 1))


def test_recon_publish_names_the_line_the_broker_refused_for_its_size(capped_rabbit, tmp_path):
    _publish(capped_rabbit.broker_url, b"{}")  # the topology exists
    small = b'{"type": "coupon.redeemed", "event_id": "fits"}'
    big = b'{"type": "coupon.redeemed", "pad": "' + b"x" * LIMIT + b'"}'
    (tmp_path / "events.jsonl").write_bytes(b"\n".join([small, big, small]) + b"\n")

    result = recon(["publish", "events.jsonl"], capped_rabbit.broker_url, tmp_path)

    assert result.returncode == 1
    assert f"line 2: refused: message size {len(big)} is larger than" in result.stderr
    assert "published 2 event(s)" in result.stderr
    assert "1 refused" in result.stderr


def test_recon_declare_says_a_capped_broker_refuses_oversized_messages(capped_rabbit, tmp_path):
    result = recon(["declare"], capped_rabbit.broker_url, tmp_path)

    assert result.returncode == 0, result.stderr
    assert f"the broker refuses messages over {LIMIT:,} bytes" in result.stdout
    assert "warning" not in result.stderr


def test_recon_declare_warns_when_the_broker_takes_giant_messages(vhost_url, tmp_path):
    result = recon(["declare"], vhost_url, tmp_path)

    assert result.returncode == 0, result.stderr
    warning = result.stderr.strip()
    assert warning.startswith("warning: the broker accepts messages over 262,144 bytes")
    assert "max_message_size = 262144" in warning


def test_the_intake_logs_at_start_whether_the_broker_caps_messages(capped_rabbit, vhost_url):
    with capture_logs() as logs:
        with Connection(capped_rabbit.broker_url) as conn:
            check_message_cap(conn)
        with Connection(vhost_url) as conn:
            check_message_cap(conn)

    assert [(e["event"], e["log_level"], e["state"]) for e in logs] == [
        ("intake.broker_cap", "info", "capped"),
        ("intake.broker_uncapped", "warning", "uncapped"),
    ]


@pytest.mark.e2e
def test_a_worker_on_an_uncapped_broker_says_so_in_its_log(workers):
    workers.start("w1")

    line = wait_for(
        lambda: next(
            (line for line in workers.log_of("w1").splitlines() if "broker_uncapped" in line), None
        ),
        timeout=90,
    )
    assert "max_message_size = 262144" in line
