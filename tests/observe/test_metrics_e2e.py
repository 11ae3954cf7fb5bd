"""/metrics of real `recon worker` processes (prefork pools of 2) after real traffic through
RabbitMQ, PostgreSQL and the sandbox: the counters agree with the rows in the database."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from models.events import InboxEvent
from models.outcomes import Outcome
from models.redemptions import PointsRedeemRequest, Redemption
from models.session import unit_of_work
from models.transactions import Transaction
from tests.factories import events
from tests.factories.redemptions import make_redeem_request, make_redemption
from tests.factories.transactions import make_transaction
from tests.prometheus import by_labels, scrape, total, unbounded_labels
from tests.workers import RECON, wait_for

pytestmark = pytest.mark.e2e
FINAL = ("succeeded", "failed", "gave_up", "unknown")


def port_in(log: str) -> int:
    """The port a process logged (RECON_METRICS_PORT=0 lets the OS pick a free one)."""
    for line in log.splitlines():
        if '"metrics.serving"' in line:
            return int(json.loads(line)["port"])
    return 0


def serving_port(workers, name: str) -> int:
    return port_in(workers.log_of(name))


def summed(*scrapes) -> Counter:
    """Two worker instances: their counters add up (the database gauges are each a full view)."""
    out: Counter = Counter()
    for samples in scrapes:
        for key, value in samples.items():
            out[key] += value
    return out


def outcome_rows(engine) -> Counter:
    with unit_of_work(engine) as session:
        rows = session.execute(
            select(Outcome.kind, Outcome.status, Outcome.code, func.count()).group_by(
                Outcome.kind, Outcome.status, Outcome.code
            )
        ).all()
    return Counter(
        {
            (kind, status, str(code) if code is not None else "none"): n
            for kind, status, code, n in rows
        }
    )


def settled(engine, redemptions: int, requests_: int) -> bool:
    with unit_of_work(engine) as session:
        done = session.scalar(
            select(func.count()).select_from(Redemption).where(Redemption.state.in_(FINAL))
        )
        asked = session.scalar(
            select(func.count())
            .select_from(PointsRedeemRequest)
            .where(PointsRedeemRequest.state.in_(FINAL))
        )
    return done >= redemptions and asked >= requests_


def inbox_statuses(engine) -> Counter:
    with unit_of_work(engine) as session:
        return Counter(session.scalars(select(InboxEvent.status)).all())


def ids_in_database(engine) -> set[str]:
    with unit_of_work(engine) as session:
        values = set(session.scalars(select(Redemption.redemption_id)).all())
        values |= set(session.scalars(select(Redemption.order_ref)).all())
        values |= set(session.scalars(select(Redemption.customer_value)).all())
        values |= set(session.scalars(select(Transaction.bill_number)).all())
        values |= {str(v) for v in session.scalars(select(Transaction.bill_id)).all()}
        values |= set(session.scalars(select(InboxEvent.event_id)).all())
    return {str(v) for v in values if v}


def publish_orders(workers, sandbox, prefix: str, base: int, count: int) -> int:
    """``count`` orders of two coupons and one points redemption each; returns redemptions."""
    for number in range(count):
        mobile, order = f"919{base + number:09d}", f"{prefix}-{number}"
        first, second, points = base + 2 * number, base + 2 * number + 1, f"{prefix}P{number}"
        sandbox.register_coupon(first, mobile)
        sandbox.register_coupon(second, mobile)
        sandbox.register_points(points, mobile)
        workers.publish(
            events.body(events.coupon_redeemed(order, first, mobile)),
            events.body(events.coupon_redeemed(order, second, mobile)),
            events.body(events.points_redeemed(order, points, mobile)),
            events.body(events.transaction_completed(order, mobile)),
        )
    return 3 * count


def test_two_workers_with_pools_of_two_count_exactly_the_outcome_rows(
    workers, clean_db, sandbox, tmp_path
):
    metrics_dir = tmp_path / "metrics"
    settings = {"RECON_METRICS_PORT": "0", "RECON_METRICS_DIR": str(metrics_dir)}
    w1 = workers.start("w1", concurrency=2, **settings)
    workers.start("w2", concurrency=2, **settings)
    port1 = wait_for(lambda: serving_port(workers, "w1"), timeout=60)
    port2 = wait_for(lambda: serving_port(workers, "w2"), timeout=60)
    assert port1 != port2
    own_dirs = sorted(p.name for p in metrics_dir.iterdir() if p.is_dir())
    assert len(own_dirs) == 2  # one fresh directory per worker instance
    # Beside them, each worker's target file says where it serves (Prometheus's file_sd).
    announced = {
        json.loads(path.read_text())[0]["targets"][0]
        for path in metrics_dir.glob("recon-worker-*.json")
    }
    assert announced == {f"127.0.0.1:{port1}", f"127.0.0.1:{port2}"}

    # Throttling (429 with Retry-After), a busy customer (521), a 5xx, an unknown coupon (510 and
    # the batch's 762), a points redeem (800), a malformed message and a duplicate.
    sandbox.script("/v2/coupon/redeem", {"status": 429, "retry_after": 1})
    sandbox.script("/v2/points/updateRedemption", {"code": 521}, {"status": 503})
    redemptions = publish_orders(workers, sandbox, "ma", 71000, 6)
    mobile = "919500999999"
    sandbox.register_coupon(99001, mobile)
    bad_order = [
        events.coupon_redeemed("mb-bad", 99001, mobile),
        events.coupon_redeemed("mb-bad", 99002, mobile),  # never issued: 510
        events.transaction_completed("mb-bad", mobile),
    ]
    workers.publish(*(events.body(e) for e in bad_order))
    redemptions += 2
    workers.publish(events.body(events.redeem_requested("mb-redeem", mobile, points="5")))
    workers.publish(b"{not json", events.body(bad_order[0]))
    wait_for(lambda: settled(clean_db, redemptions, 1), timeout=120)

    def agrees() -> bool:
        both = summed(scrape(port1), scrape(port2))
        return by_labels(both, "recon_outcomes_total", "kind", "status", "code") == outcome_rows(
            clean_db
        )

    wait_for(agrees, timeout=30)

    # A pool child dies (SIGKILL: no chance to clean up); what it counted still counts.
    [victim, *_] = workers.pool_children(w1)
    victim.send_signal(signal.SIGKILL)
    redemptions += publish_orders(workers, sandbox, "mc", 72000, 4)
    wait_for(lambda: settled(clean_db, redemptions, 1), timeout=120)
    wait_for(agrees, timeout=30)

    first, second = scrape(port1), scrape(port2)
    both = summed(first, second)
    rows = outcome_rows(clean_db)
    assert by_labels(both, "recon_outcomes_total", "kind", "status", "code") == rows
    assert rows[("coupon", "failed", "510")] == 1
    assert rows[("coupon", "succeeded", "762")] == 1
    assert rows[("points_redeem", "succeeded", "800")] == 1

    # Every call the sandbox received was counted once, timed once, and took a budget slot.
    stats = sandbox.stats()
    calls = total(both, "recon_platform_calls_total")
    assert calls == stats["total"]
    assert total(both, "recon_platform_call_seconds_count") == calls
    assert total(both, "recon_ratelimit_slots_total") == calls
    assert total(both, "recon_platform_throttled_total", endpoint="coupon_update") == 1
    assert total(both, "recon_platform_customer_busy_total", endpoint="points_update") == 1
    assert total(both, "recon_platform_calls_total", http_class="4xx", result="rate_limited") == 1
    assert (
        total(both, "recon_platform_calls_total", http_class="5xx", endpoint="points_update") == 1
    )
    assert total(both, "recon_platform_calls_total", code="800", endpoint="points_redeem") == 1

    # Intake fates match the inbox; the duplicate and the malformed message are counted too.
    inbox = inbox_statuses(clean_db)
    assert total(both, "recon_intake_messages_total", fate="stored") == inbox["accepted"]
    assert total(both, "recon_intake_messages_total", fate="rejected") == inbox["rejected"] == 1
    assert total(both, "recon_intake_messages_total", fate="duplicate") == 1

    # Gauges from PostgreSQL: nothing is open any more, and each worker reads them.
    for samples in (first, second):
        assert total(samples, "recon_db_gauges_up") == 1
        assert total(samples, "recon_open_items") == 0
        assert total(samples, "recon_oldest_open_item_age_seconds") == 0
        assert total(samples, "recon_unknown_redeems") == 0
        assert total(samples, "recon_ratelimit_budget_per_minute") == 1000

    # Bounded labels: every value is from the vocabulary, and no id from the data is a label.
    assert unbounded_labels(both, ids_in_database(clean_db)) == []

    # A worker that stops removes its directory and its target file.
    workers.stop()
    wait_for(lambda: not any(Path(metrics_dir).iterdir()), timeout=30)


def test_a_metrics_port_already_taken_stops_the_worker_with_one_readable_line(workers):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = workers.start("w1", RECON_METRICS_PORT=str(port))
        assert worker.wait(timeout=60) != 0
    log = workers.log_of("w1")
    assert f"RECON_METRICS_PORT: cannot serve /metrics on 127.0.0.1:{port}" in log
    assert "Traceback" not in log


def test_beat_serves_the_gauges_read_from_postgresql(workers, session, tmp_path):
    bill = make_transaction(session)
    make_redemption(session, transaction_id=bill.id, state="gave_up")
    make_redeem_request(session, state="unknown")
    session.commit()
    log_path = tmp_path / "beat.log"
    with log_path.open("wb") as log:
        beat = subprocess.Popen(
            [RECON, "beat", "--schedule", str(tmp_path / "beat-schedule")],
            env={**workers.env, "RECON_METRICS_PORT": "0"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        port = wait_for(lambda: port_in(log_path.read_text(errors="replace")), timeout=60)
        samples = scrape(port)
    finally:
        beat.send_signal(signal.SIGTERM)
        beat.wait(timeout=30)
    assert total(samples, "recon_db_gauges_up") == 1
    assert total(samples, "recon_open_items", item="redemption", state="gave_up") == 1
    assert total(samples, "recon_open_items", item="redemption", state="pending") == 0
    assert total(samples, "recon_unknown_redeems") == 1
    assert total(samples, "recon_oldest_open_item_age_seconds", item="redemption") >= 0
    assert total(samples, "recon_outcomes_total") == 0  # beat sends nothing to the platform
