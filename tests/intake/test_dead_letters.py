"""Dead letters that exist: every queue dead-letters into a declared, durable queue, with a reason,
and no message can come back forever."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, text

from models.events import InboxEvent
from models.session import build_engine, unit_of_work
from tests import services
from tests.conftest import SANDBOX_PASSWORD, SANDBOX_USER
from tests.factories import events
from tests.intake.conftest import receive
from tests.workers import wait_for
from worker.ops import migrate
from worker.queues import DEAD_QUEUE, task_queue

RECON = str(Path(sys.executable).parent / "recon")


def _rabbitmq_rows(vhost: str, what: str, *columns: str) -> list[list[str]]:
    """``rabbitmqctl list_<what>``: RabbitMQ's own word on what exists and how."""
    listing = subprocess.run(
        ["rabbitmqctl", "-q", f"list_{what}", "-p", vhost, *columns],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    rows = [line.split("\t") for line in listing.splitlines() if "\t" in line]
    return [row for row in rows if row[0] != "name"]


def _queues(vhost: str) -> dict[str, tuple[str, str]]:
    """name -> (durable, arguments)."""
    rows = _rabbitmq_rows(vhost, "queues", "name", "durable", "arguments")
    return {row[0]: (row[1], row[2]) for row in rows}


def _exchanges(vhost: str) -> dict[str, str]:
    """name -> "type durable"."""
    rows = _rabbitmq_rows(vhost, "exchanges", "name", "type", "durable")
    return {row[0]: f"{row[1]} {row[2]}" for row in rows}


@pytest.fixture
def fresh_vhost() -> Iterator[tuple[str, str]]:
    url, name = services.create_vhost("recon_dlx")
    yield url, name
    services.delete_vhost(name)


def _env(pg_url: str, broker_url: str) -> dict[str, str]:
    import os

    return {
        **os.environ,
        "RECON_DATABASE_URL": pg_url,
        "RECON_BROKER_URL": broker_url,
        "LOYALTY_API_USERNAME": SANDBOX_USER,
        "LOYALTY_API_PASSWORD": SANDBOX_PASSWORD,
    }


def test_recon_declare_creates_durable_dead_letters_before_the_queues_that_use_them(
    pg_url, fresh_vhost
):
    url, vhost = fresh_vhost
    done = subprocess.run(
        [RECON, "declare"], env=_env(pg_url, url), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    queues = _queues(vhost)
    assert queues["recon.dead"][0] == "true"
    assert "x-dead-letter-exchange" not in queues["recon.dead"][1]
    for name in ("recon.events", "recon.reconcile"):
        durable, arguments = queues[name]
        assert durable == "true"
        assert "recon.dlx" in arguments
    assert "x-delivery-limit" in queues["recon.events"][1]
    assert _exchanges(vhost)["recon.dlx"] == "fanout true"


def test_the_worker_declares_the_dead_letter_topology_when_it_starts(pg_url, fresh_vhost, tmp_path):
    url, vhost = fresh_vhost
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [RECON, "worker", "-c", "1", "-n", "dlx@%h"],
        env=_env(pg_url, url),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: "recon.dead" in _queues(vhost), timeout=60, interval=1.0)
        assert _exchanges(vhost)["recon.dlx"] == "fanout true"
        assert worker.poll() is None
    finally:
        worker.terminate()
        worker.wait(timeout=30)


def test_a_message_a_consumer_rejects_lands_in_the_dead_letter_queue(broker):
    body = events.body(events.coupon_redeemed("dlx-1", 11))
    broker.publish(body)
    broker.fetch().reject(requeue=False)
    dead = broker.fetch(DEAD_QUEUE)
    assert dead.body == body
    death = dead.headers["x-death"][0]
    assert death["reason"] == "rejected"
    assert death["queue"] == "recon.events"
    assert death["routing-keys"] == ["coupon.redeemed"]
    dead.ack()


def test_a_message_that_keeps_coming_back_is_dead_lettered_at_the_delivery_limit(broker):
    limit = broker.settings.delivery_limit
    body = events.body(events.coupon_redeemed("dlx-2", 12))
    broker.publish(body)
    deliveries = 0
    while broker.depth(DEAD_QUEUE.name) == 0:
        try:
            message = broker.fetch(timeout=2.0)
        except AssertionError:
            continue  # not back yet, or already on its way to the dead letters
        message.requeue()  # a consumer that crashes on it, every time
        deliveries += 1
        assert deliveries <= limit + 1, "the broker kept giving the message back"
    dead = broker.fetch(DEAD_QUEUE)
    assert dead.body == body
    assert dead.headers["x-death"][0]["reason"] == "delivery_limit"
    assert deliveries == limit + 1
    dead.ack()


@pytest.fixture
def strict_db() -> Iterator[str]:
    """A database whose inbox refuses rejected rows and whose redemptions refuse one order:
    a real server saying no for reasons that are not an outage."""
    url = services.create_database("recon_strict")
    migrate.upgrade(url)
    engine = build_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text("ALTER TABLE inbox_events ADD CONSTRAINT no_rejects CHECK (status <> 'rejected')")
        )
        conn.execute(
            text("ALTER TABLE redemptions ADD CONSTRAINT no_poison CHECK (order_ref <> 'poison')")
        )
    engine.dispose()
    yield url
    services.drop_database(url)


def test_a_valid_event_the_database_refuses_is_kept_as_rejected_with_the_reason(
    broker, pg_url, clean_db
):
    engine = build_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(
            text("ALTER TABLE redemptions ADD CONSTRAINT no_poison CHECK (order_ref <> 'poison')")
        )
    try:
        body = events.body(events.coupon_redeemed("poison", 13))
        fate, message = receive(broker, engine, body)
        assert fate == "rejected"
        assert message.acknowledged
        with unit_of_work(engine) as session:
            row = session.scalars(select(InboxEvent)).one()
        assert row.status == "rejected"
        assert row.reason.startswith("could not be stored: IntegrityError")
        assert row.raw_bytes == body
        assert json.loads(row.raw_body)["order_ref"] == "poison"
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE redemptions DROP CONSTRAINT no_poison"))
        engine.dispose()


def test_a_message_not_even_a_rejected_row_can_hold_is_dead_lettered_with_its_reason(
    broker, strict_db
):
    engine = build_engine(strict_db)
    try:
        fate, message = receive(broker, engine, b"\xff not an event", routing_key="points.redeemed")
    finally:
        engine.dispose()
    assert fate == "dead_lettered"
    assert message.acknowledged
    assert broker.depth(broker.events.name) == 0
    dead = broker.fetch(DEAD_QUEUE)
    assert dead.body == b"\xff not an event"
    reason = dead.headers["x-recon-reason"]
    assert reason.startswith("could not be stored: IntegrityError")
    assert "not even as a rejected row" in reason
    assert dead.headers["x-recon-original-exchange"] == "orders"
    assert dead.headers["x-recon-original-routing-key"] == "points.redeemed"
    assert dt.datetime.fromisoformat(dead.headers["x-recon-dead-at"]).tzinfo is not None
    dead.ack()


def test_an_accepted_message_enqueues_its_order_after_the_commit(broker, clean_db):
    receive(broker, clean_db, events.body(events.coupon_redeemed("enq-1", 14)))
    fate, _ = receive(broker, clean_db, events.body(events.transaction_completed("enq-1")))
    assert fate == "accepted"
    task = broker.fetch(task_queue())
    assert task.headers["task"] == "recon.reconcile_order"
    assert json.loads(task.body)[0] == ["enq-1"]
    task.ack()
