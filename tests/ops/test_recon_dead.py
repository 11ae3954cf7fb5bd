"""`recon dead ...` on real RabbitMQ: messages dead-lettered by the product's own topology."""

from __future__ import annotations

import json
import subprocess

import pytest
from kombu import Connection, Exchange, Producer
from sqlalchemy import select

from models.events import InboxEvent
from models.operator_log import OperatorAction
from models.outcomes import Outcome
from models.session import unit_of_work
from tests.factories import events
from tests.workers import RECON, wait_for
from worker.intake.consumer import events_queue_for
from worker.queues import DEAD_QUEUE

pytestmark = pytest.mark.e2e
MOBILE = "919700000077"


def recon(
    workers, *args: str, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RECON, "dead", *args],
        env={**workers.env, **env},
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
        check=False,
    )


def dead_count(workers) -> int:
    with Connection(workers.settings.broker_url) as conn:
        return conn.default_channel.queue_declare(DEAD_QUEUE.name, passive=True)[1]


@pytest.fixture
def dead_queue(workers):
    """recon.dead as the product declares it, empty."""
    with Connection(workers.settings.broker_url) as conn:
        DEAD_QUEUE(conn.default_channel).declare()
        conn.default_channel.queue_purge(DEAD_QUEUE.name)
    yield
    with Connection(workers.settings.broker_url) as conn:
        conn.default_channel.queue_purge(DEAD_QUEUE.name)


def reject_everything_on_the_events_queue(workers, expected: int) -> None:
    """A consumer that gives up on each message: the broker dead-letters it to recon.dlx."""
    with Connection(workers.settings.broker_url) as conn:
        queue = events_queue_for(workers.settings)(conn.default_channel)
        rejected = 0

        def take() -> bool:
            nonlocal rejected
            message = queue.get(no_ack=False, accept=None)
            if message is not None:
                message.reject(requeue=False)
                rejected += 1
            return rejected >= expected

        wait_for(take, timeout=30, interval=0.05)


def listed(workers) -> list[dict]:
    result = recon(workers, "list", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def inbox_rows(engine) -> list[InboxEvent]:
    with unit_of_work(engine) as session:
        return list(session.scalars(select(InboxEvent).order_by(InboxEvent.id)))


def operator_log(engine) -> list[OperatorAction]:
    with unit_of_work(engine) as session:
        return list(session.scalars(select(OperatorAction).order_by(OperatorAction.id)))


def test_a_dead_lettered_event_is_listed_replayed_once_stored_once_and_reconciled(
    workers, dead_queue, clean_db, sandbox
):
    sandbox.register_coupon(5101, MOBILE)
    coupon = events.body(events.coupon_redeemed("dl-1", 5101, MOBILE))
    bill = events.body(events.transaction_completed("dl-1", MOBILE, bill_number="B-DL-1"))
    workers.publish(coupon, bill)
    reject_everything_on_the_events_queue(workers, 2)
    wait_for(lambda: dead_count(workers) == 2)

    rows = listed(workers)
    assert [(r["reason"], r["count"], r["source_queue"], r["exchange"]) for r in rows] == [
        ("rejected", 1, workers.settings.events_queue, workers.settings.events_exchange)
    ] * 2
    assert sorted(r["routing_key"] for r in rows) == ["coupon.redeemed", "transaction.completed"]
    assert dead_count(workers) == 2  # listing took nothing

    result = recon(
        workers, "replay", "--all", "--reason", "consumer bug fixed", "--operator", "alice"
    )
    assert result.returncode == 0, result.stderr
    assert "2 replayed" in result.stderr
    assert dead_count(workers) == 0

    workers.start()
    wait_for(lambda: len(inbox_rows(clean_db)) == 2)

    def reconciled() -> list[tuple]:
        with unit_of_work(clean_db) as session:
            return [
                (o.redemption_id, o.code, o.status, o.bill_number)
                for o in session.scalars(select(Outcome).where(Outcome.code == 761))
            ]

    assert wait_for(reconciled) == [("5101", 761, "succeeded", "B-DL-1")]
    assert sandbox.coupon(5101)["update_count"] == 1

    log = operator_log(clean_db)
    assert [(a.action, a.operator, a.reason, a.target) for a in log] == [
        ("dead.replay", "alice", "consumer bug fixed", DEAD_QUEUE.name)
    ] * 2
    assert {a.subject for a in log} == {r["id"] for r in rows}

    # The same event dead-lettered and replayed again: the inbox keeps one row, nothing resent.
    workers.stop()
    workers.publish(coupon)
    reject_everything_on_the_events_queue(workers, 1)
    wait_for(lambda: dead_count(workers) == 1)
    [again] = listed(workers)
    result = recon(workers, "replay", again["id"], "--reason", "twice on purpose")
    assert result.returncode == 0, result.stderr
    workers.start("w2")
    wait_for(
        lambda: "intake.stored" in workers.log_of("w2") and "duplicate" in workers.log_of("w2")
    )
    assert len(inbox_rows(clean_db)) == 2
    assert sandbox.coupon(5101)["update_count"] == 1


def publish_dead(workers, body: bytes, headers: dict) -> None:
    """A message as the intake dead-letters it itself: its x-recon-* headers, and the original
    routing key."""
    with Connection(
        workers.settings.broker_url, transport_options={"confirm_publish": True}
    ) as conn:
        producer = Producer(conn.default_channel)
        producer.publish(
            body,
            exchange=Exchange("recon.dlx", type="fanout", durable=True),
            routing_key=headers.get("x-recon-original-routing-key", ""),
            headers=headers,
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=2,
        )


def test_intake_headers_name_the_way_back_and_a_copy_for_no_event_type_stays_dead(
    workers, dead_queue, clean_db, sandbox
):
    event = events.coupon_redeemed("dl-2", 5201, MOBILE)
    publish_dead(
        workers,
        events.body(event),
        {
            "x-recon-reason": "store failed 5 times",
            "x-recon-original-exchange": workers.settings.events_exchange,
            "x-recon-original-routing-key": "coupon.redeemed",
        },
    )
    publish_dead(
        workers,
        b'{"type": "nothing.routes.this"}',
        {
            "x-recon-reason": "bug",
            "x-recon-original-exchange": workers.settings.events_exchange,
            "x-recon-original-routing-key": "nothing.routes.this",
        },
    )
    wait_for(lambda: dead_count(workers) == 2)
    rows = listed(workers)
    assert [(r["reason"], r["routing_key"]) for r in rows] == [
        ("store failed 5 times", "coupon.redeemed"),
        ("bug", "nothing.routes.this"),
    ]
    result = recon(workers, "replay", "--all", "--reason", "retry")
    assert result.returncode == 1
    assert "NOT replayed" in result.stderr
    assert "refused" in result.stderr
    assert [r["routing_key"] for r in listed(workers)] == ["nothing.routes.this"]
    with Connection(workers.settings.broker_url) as conn:
        waiting = events_queue_for(workers.settings)(conn.default_channel).get(no_ack=True)
    assert json.loads(waiting.body)["event_id"] == event["event_id"]
    assert [a.action for a in operator_log(clean_db)] == ["dead.replay", "dead.replay_refused"]


def test_show_masks_credentials_and_purge_asks_first(workers, dead_queue, clean_db):
    body = json.dumps({"type": "coupon.redeemed", "password": "hunter2-secret"}).encode()
    publish_dead(
        workers,
        body,
        {
            "x-recon-reason": "contract",
            "x-recon-original-exchange": workers.settings.events_exchange,
            "x-recon-original-routing-key": "coupon.redeemed",
            "authorization": "Bearer abcdef123456",
        },
    )
    wait_for(lambda: dead_count(workers) == 1)
    [row] = listed(workers)
    shown = recon(workers, "show", row["id"])
    assert shown.returncode == 0, shown.stderr
    assert "contract" in shown.stdout
    assert "coupon.redeemed" in shown.stdout
    for secret in ("hunter2-secret", "abcdef123456"):
        assert secret not in shown.stdout + shown.stderr + json.dumps(row)

    declined = recon(workers, "purge", "--reason", "obsolete", stdin="n\n")
    assert declined.returncode != 0
    assert dead_count(workers) == 1
    young = recon(workers, "purge", "--older-than", "1d", "--reason", "old only", "--yes")
    assert young.returncode == 0, young.stderr
    assert "purged 0 of 1" in young.stdout
    assert dead_count(workers) == 1

    purged = recon(workers, "purge", "--reason", "reviewed: obsolete", "--yes", "--operator", "bob")
    assert purged.returncode == 0, purged.stderr
    assert "purged 1 of 1" in purged.stdout
    assert dead_count(workers) == 0
    assert [(a.action, a.operator, a.reason, a.subject) for a in operator_log(clean_db)] == [
        ("dead.purge", "bob", "reviewed: obsolete", row["id"])
    ]


def test_replay_names_what_it_could_not_find_and_wants_a_reason(workers, dead_queue):
    missing = recon(workers, "replay", "0123456789abcdef", "--reason", "x")
    assert missing.returncode == 1
    assert "no dead message '0123456789abcdef'" in missing.stderr
    no_reason = recon(workers, "replay", "--all")
    assert no_reason.returncode == 2
    assert "--reason" in no_reason.stderr
    assert "Traceback" not in missing.stderr + no_reason.stderr


def test_a_replay_that_cannot_record_leaves_the_message_dead(workers, dead_queue, pg_url):
    publish_dead(
        workers,
        events.body(events.coupon_redeemed("dl-3", 5301, MOBILE)),
        {
            "x-recon-reason": "bug",
            "x-recon-original-exchange": workers.settings.events_exchange,
            "x-recon-original-routing-key": "coupon.redeemed",
        },
    )
    wait_for(lambda: dead_count(workers) == 1)
    nowhere = pg_url.rsplit("/", 1)[0] + "/recon_no_such_database"
    result = recon(workers, "replay", "--all", "--reason", "x", RECON_DATABASE_URL=nowhere)
    assert result.returncode == 1
    assert "cannot write the operator log" in result.stderr
    assert "Traceback" not in result.stderr
    assert dead_count(workers) == 1  # not acked: still there for a replay that can record it
    with Connection(workers.settings.broker_url) as conn:
        copy = events_queue_for(workers.settings)(conn.default_channel).get(no_ack=True)
    assert copy is None  # and no copy went out either
