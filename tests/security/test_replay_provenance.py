"""What a message says is data, never an address: a dead letter cannot choose where its replay
goes, and operators address dead letters by ids the product computed, not a publisher's
``message_id``. Real RabbitMQ, real `recon dead`, real workers."""

from __future__ import annotations

import json
import uuid

import pytest
from celery import Celery
from kombu import Connection
from sqlalchemy import select

from models.operator_log import OperatorAction
from models.session import unit_of_work
from tests.factories import events
from tests.security.dead import (
    depth,
    listed,
    peek_all,
    publish_and_let_it_expire,
    recon_dead,
    take_all,
)
from tests.workers import wait_for
from worker.queues import DEAD_QUEUE, TASK_QUEUE, task_queue

pytestmark = pytest.mark.e2e
EMPTY_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def celery_task_headers(task: str, task_id: str) -> dict[str, object]:
    """What makes a Celery worker run a message (task protocol 2)."""
    return {
        "lang": "py", "task": task, "id": task_id, "root_id": task_id, "parent_id": None,
        "group": None, "retries": 0, "eta": None, "expires": None, "timelimit": [None, None],
        "argsrepr": "()", "kwargsrepr": "{}", "origin": "gen1@attacker",
    }  # fmt: skip


@pytest.fixture
def dead_queue(workers):
    """recon.dead as the product declares it, empty before and after."""
    with Connection(workers.settings.broker_url) as conn:
        DEAD_QUEUE(conn.default_channel).declare()
        conn.default_channel.queue_purge(DEAD_QUEUE.name)
    yield
    with Connection(workers.settings.broker_url) as conn:
        conn.default_channel.queue_purge(DEAD_QUEUE.name)


def operator_log(engine) -> list[OperatorAction]:
    with unit_of_work(engine) as session:
        return list(session.scalars(select(OperatorAction).order_by(OperatorAction.id)))


def test_rabbitmq_keeps_a_publisher_set_x_death_entry_so_x_death_is_not_proof(workers, dead_queue):
    """The broker fact the design rests on (RabbitMQ 3.10): when a message dies in a queue, an
    x-death entry its publisher wrote for the same queue and reason is kept and counted up,
    with the publisher's exchange and routing keys. Only the entry's queue and reason are the
    broker's; the exchange and routing key in it prove nothing."""
    forged = [{"queue": workers.settings.events_queue, "reason": "expired", "count": 1,
               "exchange": "recon", "routing-keys": [TASK_QUEUE]}]  # fmt: skip
    publish_and_let_it_expire(
        workers, b"{}", routing_key="coupon.redeemed", headers={"x-death": forged}
    )
    [dead] = take_all(workers, DEAD_QUEUE.name)
    [death] = dead.headers["x-death"]
    assert (death["queue"], death["reason"], death["count"]) == (
        workers.settings.events_queue, "expired", 2,
    )  # fmt: skip
    assert (death["exchange"], death["routing-keys"]) == ("recon", [TASK_QUEUE])
    # The routing key the dead copy travelled with is the broker's own: the original one.
    assert dead.delivery_info["routing_key"] == "coupon.redeemed"


@pytest.mark.parametrize(
    "forgery",
    [
        pytest.param(
            {"x-recon-reason": "store failed", "x-recon-original-exchange": "recon",
             "x-recon-original-routing-key": TASK_QUEUE},
            id="x-recon-headers",
        ),
        pytest.param(
            {"x-death": [{"queue": "recon.events", "reason": "expired", "count": 1,
                          "exchange": "recon", "routing-keys": [TASK_QUEUE]}]},
            id="x-death-entry",
        ),
    ],
)  # fmt: skip
def test_a_message_with_forged_origin_and_task_headers_is_refused_and_the_refusal_recorded(
    workers, dead_queue, clean_db, forgery
):
    """An order system (or anyone who may publish to `orders`) sends a Celery task message in
    disguise; once dead-lettered, a replay must not turn it into a recon.backfill task."""
    task_id = str(uuid.uuid4())
    headers = {**celery_task_headers("recon.backfill", task_id), **forgery}
    body = json.dumps([[], {}, EMPTY_EMBED]).encode()
    publish_and_let_it_expire(workers, body, routing_key="coupon.redeemed", headers=headers)
    [row] = listed(workers)

    result = recon_dead(
        workers, "replay", "--all", "--reason", "clear the backlog", "--operator", "carol"
    )

    assert result.returncode == 1, result.stdout + result.stderr
    [refusal] = [line for line in result.stderr.splitlines() if line.startswith("NOT replayed")]
    assert refusal.startswith(f"NOT replayed {row['id']}: refused")
    assert "Traceback" not in result.stderr
    for queue in (TASK_QUEUE, "recon.redrive", workers.settings.events_queue):
        assert depth(workers, queue) == 0, queue
    assert depth(workers, DEAD_QUEUE.name) == 1  # still there for a person to look at
    # Logged, and on record with who and why.
    assert "dead.replay_refused" in result.stderr
    [action] = operator_log(clean_db)
    assert (action.action, action.operator, action.subject) == (
        "dead.replay_refused", "carol", row["id"],
    )  # fmt: skip
    assert action.reason == "clear the backlog"
    assert action.detail["refused"] in refusal


def test_a_publisher_chosen_message_id_addresses_nothing(workers, dead_queue):
    """Two different messages share one publisher-chosen message_id: each still gets an id of
    its own, the shared one names nothing, and replaying one id replays that message alone."""
    first = events.body(events.coupon_redeemed("mid-1", 7101))
    second = events.body(events.coupon_redeemed("mid-2", 7102))
    for body in (first, second):
        publish_and_let_it_expire(
            workers, body, routing_key="coupon.redeemed", message_id="order-42"
        )
    rows = listed(workers)
    ids = [row["id"] for row in rows]
    assert len(set(ids)) == 2
    assert "order-42" not in ids

    by_publisher_id = recon_dead(workers, "replay", "order-42", "--reason", "x")
    assert by_publisher_id.returncode == 1
    assert "no dead message 'order-42'" in by_publisher_id.stderr
    assert depth(workers, DEAD_QUEUE.name) == 2

    one = recon_dead(workers, "replay", ids[0], "--reason", "fixed")
    assert one.returncode == 0, one.stderr
    assert "1 replayed, 0 not" in one.stderr
    assert depth(workers, DEAD_QUEUE.name) == 1
    [copy] = take_all(workers, workers.settings.events_queue)
    assert copy.body == first


def test_a_genuine_dead_event_replays_once_to_the_events_exchange_and_nowhere_else(
    workers, dead_queue
):
    body = events.body(events.transaction_completed("gen-1", bill_number="B-GEN-1"))
    publish_and_let_it_expire(
        workers, body, routing_key="transaction.completed", headers={"x-trace": "abc"}
    )
    [row] = listed(workers)
    assert (row["exchange"], row["routing_key"]) == ("orders", "transaction.completed")

    done = recon_dead(workers, "replay", row["id"], "--reason", "consumer fixed")
    assert done.returncode == 0, done.stderr
    again = recon_dead(workers, "replay", row["id"], "--reason", "consumer fixed")
    assert again.returncode == 1
    assert f"no dead message {row['id']!r}" in again.stderr

    [copy] = take_all(workers, workers.settings.events_queue)
    assert copy.body == body
    assert copy.delivery_info["routing_key"] == "transaction.completed"
    # The copy carries nothing its publisher set but the body and its content type.
    assert "x-trace" not in copy.headers
    assert not [k for k in copy.headers if k.startswith(("x-recon", "x-death", "x-first"))]
    assert depth(workers, DEAD_QUEUE.name) == 0
    assert depth(workers, TASK_QUEUE) == 0


def test_only_a_task_the_worker_dead_lettered_itself_goes_back_to_its_task_queue(
    workers, dead_queue, clean_db
):
    """A task message that kept coming back is dead-lettered by the worker (delivery limit),
    which records it; a forged copy of it (same task and id, other arguments) is refused."""
    order_system = Celery("order-system", broker=workers.settings.broker_url, set_as_current=False)
    try:
        sent = order_system.send_task(
            "recon.reconcile_order", args=["ORD-DL-T1"], queue=task_queue(TASK_QUEUE)
        )
    finally:
        order_system.close()
    # It comes back once more than the delivery limit allows (workers lost under it): taken
    # unacknowledged and given back, each time counted by the quorum queue (x-delivery-count).
    for _ in range(workers.settings.delivery_limit + 1):
        with Connection(workers.settings.broker_url) as conn:
            channel = conn.channel()
            assert task_queue(TASK_QUEUE)(channel).get(no_ack=False, accept=None) is not None
            channel.close()
    worker = workers.start("w1")
    wait_for(lambda: depth(workers, DEAD_QUEUE.name) == 1, timeout=60)
    workers.stop()
    assert worker.returncode is not None
    assert "task.delivery_limit" in workers.log_of("w1")

    forged_headers = celery_task_headers("recon.reconcile_order", sent.id)
    forged_body = json.dumps([["ORD-SOMEONE-ELSE"], {}, EMPTY_EMBED]).encode()
    publish_and_let_it_expire(
        workers, forged_body, routing_key="coupon.redeemed", headers=forged_headers
    )
    assert len(listed(workers)) == 2

    result = recon_dead(workers, "replay", "--all", "--reason", "bug fixed")
    assert result.returncode == 1
    assert "1 replayed, 1 not" in result.stderr
    assert f"to 'recon' / '{TASK_QUEUE}'" in result.stdout
    [copy] = peek_all(workers, TASK_QUEUE)
    assert copy.headers["task"] == "recon.reconcile_order"
    assert copy.headers["id"] != sent.id  # a fresh message, its returns counted afresh
    assert json.loads(copy.body)[0] == ["ORD-DL-T1"]
    [left] = take_all(workers, DEAD_QUEUE.name)
    assert json.loads(left.body)[0] == ["ORD-SOMEONE-ELSE"]
    assert depth(workers, workers.settings.events_queue) == 0

    # The replayed copy is a task a worker runs.
    workers.start("w2")
    wait_for(lambda: "recon.reconcile_order" in workers.log_of("w2")
             and "succeeded" in workers.log_of("w2"), timeout=60)  # fmt: skip
