"""A batch through real RabbitMQ into real PostgreSQL: each message still gets exactly one fate.

The batch is fetched unacknowledged from the events queue and handed to the intake's own
``handle_batch``. Whether everything was acknowledged is asked of the broker: the channel is
closed, which returns whatever it still held to the queue.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter

import pytest
from sqlalchemy import Engine, event, select, text
from structlog.testing import capture_logs

from models.events import InboxEvent
from models.redemptions import Redemption
from models.session import build_engine, unit_of_work
from tests import services
from tests.factories import events
from tests.intake.conftest import Broker
from tests.workers import wait_for
from worker.intake.fates import handle_batch
from worker.intake.publish import Enqueuer
from worker.intake.store import Stored
from worker.queues import task_queue


def fetch_all(broker: Broker, bodies: list[bytes], routing_key: str = "coupon.redeemed") -> list:
    for body in bodies:
        broker.publish(body, routing_key)
    return [broker.fetch() for _ in bodies]


def settle(broker: Broker, engine: Engine, messages: list) -> int:
    return handle_batch(
        messages,
        engine=engine,
        publish=broker.enqueuer.publish,
        dead_letter=broker.enqueuer.dead_letter,
    )


def left_in_queue(broker: Broker, expected: int = 0) -> int:
    """Messages ready in the events queue once the fetching channel gave back what it held.

    A quorum queue takes back a closed channel's messages through its log, a moment after the
    close returns: the count is read until it is ``expected`` or has had ten seconds to get there.
    """
    broker.channel.close()
    broker.channel = broker.connection.channel()
    broker.channel.auto_decode = False
    deadline = time.monotonic() + 10
    depth = broker.depth(broker.events.name)
    while depth != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        depth = broker.depth(broker.events.name)
    return depth


def inbox(engine: Engine) -> list[InboxEvent]:
    with unit_of_work(engine) as session:
        return list(session.scalars(select(InboxEvent).order_by(InboxEvent.id)))


def count_transactions(engine: Engine) -> list[int]:
    begun = [0]
    event.listen(engine, "begin", lambda _conn: begun.__setitem__(0, begun[0] + 1))
    return begun


@pytest.fixture
def poison_db(pg_url: str, clean_db: Engine):
    """The test database with redemptions refusing the order 'poison': a real server saying no
    to one row of a batch for its content."""
    engine = build_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(
            text("ALTER TABLE redemptions ADD CONSTRAINT no_poison CHECK (order_ref <> 'poison')")
        )
    yield engine
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE redemptions DROP CONSTRAINT no_poison"))
    engine.dispose()


def test_one_row_the_database_refuses_costs_a_few_transactions_and_only_that_message(
    broker, poison_db
):
    refs = [f"batch-{n}" for n in range(7)]
    refs.insert(5, "poison")
    bodies = [events.body(events.coupon_redeemed(ref, 900 + n)) for n, ref in enumerate(refs)]
    messages = fetch_all(broker, bodies)
    begun = count_transactions(poison_db)

    assert settle(broker, poison_db, messages) == len(messages)
    transactions = begun[0]

    rows = inbox(poison_db)
    assert sorted(row.order_ref or json.loads(row.raw_body)["order_ref"] for row in rows) == sorted(
        refs
    )
    fates = {(row.order_ref or json.loads(row.raw_body)["order_ref"]): row for row in rows}
    assert fates["poison"].status == "rejected"
    assert fates["poison"].reason.startswith("could not be stored: IntegrityError")
    assert fates["poison"].raw_bytes == bodies[5]
    assert all(fates[ref].status == "accepted" for ref in refs if ref != "poison")
    with unit_of_work(poison_db) as session:
        stored = sorted(session.scalars(select(Redemption.order_ref)))
    assert stored == sorted(ref for ref in refs if ref != "poison")
    # Halving: about two transactions per level down to the culprit, not one per message.
    assert transactions <= 2 * math.ceil(math.log2(len(messages))) + 2
    assert left_in_queue(broker) == 0


def test_a_batch_keeps_arrival_order_duplicates_and_rejects_as_one_message_at_a_time(
    broker, clean_db
):
    redemption = events.body(events.coupon_redeemed("batch-order", 31))
    bill = events.body(events.transaction_completed("batch-order"))
    bodies = [redemption, b"\xff not an event", redemption, bill]
    messages = fetch_all(broker, bodies)

    assert settle(broker, clean_db, messages) == 4

    assert Counter(row.status for row in inbox(clean_db)) == {"accepted": 2, "rejected": 1}
    with unit_of_work(clean_db) as session:
        linked = session.scalars(select(Redemption.transaction_id)).one()
    assert linked is not None  # the bill found the redemption stored earlier in its batch
    task = broker.fetch(task_queue())
    assert task.headers["task"] == "recon.reconcile_order"
    assert json.loads(task.body)[0] == ["batch-order"]
    task.ack()
    assert left_in_queue(broker) == 0


def test_orders_a_batch_made_ready_together_go_out_a_few_to_a_task(broker, clean_db):
    """``RECON_ORDERS_PER_TASK`` orders to a ``recon.reconcile_orders`` task, in the order they
    arrived; an order left alone keeps a task of its own, and a redeem request always has its
    own."""
    broker.enqueuer = Enqueuer(broker.app, orders_per_task=2)
    bodies = []
    for number, order_ref in enumerate(("per-task-c", "per-task-a", "per-task-b")):
        bodies.append(events.body(events.coupon_redeemed(order_ref, 40 + number)))
        bodies.append(events.body(events.transaction_completed(order_ref)))
    bodies.append(events.body(events.redeem_requested("per-task-a")))
    assert settle(broker, clean_db, fetch_all(broker, bodies)) == len(bodies)

    sent = []
    for _ in range(3):
        task = broker.fetch(task_queue())
        sent.append((task.headers["task"], json.loads(task.body)[0]))
        task.ack()
    assert sent[:2] == [
        ("recon.reconcile_orders", [["per-task-c", "per-task-a"]]),
        ("recon.reconcile_order", ["per-task-b"]),
    ]
    assert sent[2][0] == "recon.redeem_points"
    assert left_in_queue(broker) == 0


def test_a_batch_the_database_cannot_take_stays_whole_in_the_queue(broker):
    missing = services.create_database("recon_batch_down")
    services.drop_database(missing)
    engine = build_engine(missing)
    bodies = [events.body(events.coupon_redeemed(f"down-{n}", 60 + n)) for n in range(5)]
    messages = fetch_all(broker, bodies)
    try:
        assert settle(broker, engine, messages) == 0
    finally:
        engine.dispose()
    assert not any(message.acknowledged for message in messages)
    assert left_in_queue(broker, expected=len(bodies)) == len(bodies)


@pytest.mark.e2e
def test_a_partial_batch_is_stored_without_waiting_for_it_to_fill(workers, clean_db):
    # A batch of a thousand that three messages would never fill: they are stored and
    # acknowledged all the same, so the queue drains.
    workers.start("w1", RECON_INTAKE_BATCH_SIZE="1000")
    bodies = [events.body(events.coupon_redeemed(f"lone-{n}", 70 + n)) for n in range(3)]
    workers.publish(*bodies)
    wait_for(lambda: len(inbox(clean_db)) == 3, timeout=60)
    workers.wait_until_idle()
    assert {row.order_ref for row in inbox(clean_db)} == {"lone-0", "lone-1", "lone-2"}


def test_a_batch_of_tasks_is_confirmed_with_its_task_sent_events_on_the_same_channel(broker):
    # Celery publishes a task-sent event beside each task when task events are on (the worker's
    # default): the confirm wait must count those too, or it waits for confirms that never come.
    broker.app.conf.task_send_sent_event = True
    batches = [
        [Stored("accepted", f"e{n}", orders={f"sent-{n}-a", f"sent-{n}-b"})] for n in range(3)
    ]
    with capture_logs() as logs:
        for batch in batches:
            broker.enqueuer.publish(batch)
    assert [entry for entry in logs if entry["log_level"] != "debug"] == []
    names = []
    for _ in range(6):
        task = broker.fetch(task_queue())
        names.append(json.loads(task.body)[0][0])
        task.ack()
    assert sorted(names) == sorted(f"sent-{n}-{x}" for n in range(3) for x in "ab")
    broker.enqueuer.close()
