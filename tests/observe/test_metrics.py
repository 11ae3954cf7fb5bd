"""What the worker counts, and the gauges it reads from PostgreSQL, without worker processes."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from sqlalchemy import event, text

from models.session import unit_of_work
from tests.factories.redemptions import make_redeem_request, make_redemption
from tests.factories.transactions import make_transaction
from tests.prometheus import parse, total, unbounded_labels
from worker.budget.limiter import GlobalRateLimiter, Throttled
from worker.loyalty.types import Exchange
from worker.observe import exporter, gauges, metrics
from worker.ops import backfill
from worker.reconcile.outcomes import Policy, Verdict, add_outcome, outcome_values


def local() -> dict:
    """This process's counters, as its own /metrics would show them."""
    return parse(generate_latest(metrics.local_registry()).decode())


def outcome_count(**labels: str) -> float:
    return total(local(), "recon_outcomes_total", **labels)


# --- counting ------------------------------------------------------------------------------------


def _add(session, status: str = "succeeded", code: int | None = 761) -> None:
    add_outcome(
        session,
        outcome_values(
            kind="coupon",
            verdict=Verdict(status, code, "test"),
            attempt=1,
            exchange=None,
            redemption_id="5551",
            order_ref="ORD-5551",
            customer="919800000009",
            event_id="evt-5551",
        ),
    )


def test_an_outcome_counts_once_its_transaction_commits_and_never_if_it_rolls_back(clean_db):
    before = outcome_count(kind="coupon", status="succeeded", code="761")
    with unit_of_work(clean_db) as session:
        _add(session)
        assert outcome_count(kind="coupon", status="succeeded", code="761") == before
        session.commit()
    assert outcome_count(kind="coupon", status="succeeded", code="761") == before + 1
    with unit_of_work(clean_db) as session:
        _add(session)
        session.rollback()
        _add(session, status="failed", code=510)
        session.commit()
    with unit_of_work(clean_db) as session:
        _add(session)  # closed without a commit
    assert outcome_count(kind="coupon", status="succeeded", code="761") == before + 1
    assert outcome_count(kind="coupon", status="failed", code="510") >= 1


VENDOR = "/api_gateway/rewards/core/v1/vendor/redemption"
paths = st.one_of(
    st.text(max_size=40),
    st.integers(min_value=0).map(lambda n: f"{VENDOR}/{n}/brand/61"),
    st.sampled_from(["/v2/coupon/redeem", "/v1.1/points/redeem?format=json&program_id=7"]),
)  # fmt: skip
words = st.one_of(st.text(max_size=20), st.sampled_from(["stored", "accepted", "live", "coupon"]))


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=paths,
    status=st.one_of(st.none(), st.integers(min_value=-1, max_value=10_000)),
    code=st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63)),
    word=words,
)
def test_whatever_arrives_every_label_value_stays_in_a_bounded_vocabulary(path, status, code, word):
    call = Exchange(
        method="PUT",
        path=path,
        http_status=status,
        request_id="req-1",
        elapsed_ms=12.5,
        request_excerpt="",
        response_excerpt="",
    )
    metrics.platform_call(call, code=code, result=word)
    metrics.intake_message(word)
    metrics.ratelimit_slot(word)
    metrics.ratelimit_wait(0.2, word)
    metrics.ratelimit_deferral(word)
    metrics.sweeper_reenqueued(word, 2)
    metrics.backfill_redriven(word, 1)
    assert unbounded_labels(local()) == []


def test_the_rate_limiter_counts_slots_waits_and_deferrals(clean_db):
    before = local()
    # One request per second: the first goes at once, the second waits about a second.
    limiter = GlobalRateLimiter(clean_db, key="metrics-test", per_minute=60, burst=1)
    limiter.acquire()
    limiter.acquire()
    impatient = GlobalRateLimiter(
        clean_db, key="metrics-test", per_minute=60, burst=1, max_wait_seconds=0.01
    )
    with pytest.raises(Throttled):
        impatient.acquire()
    after = local()

    def delta(name: str) -> float:
        return total(after, name, work="live") - total(before, name, work="live")

    assert delta("recon_ratelimit_slots_total") == 2
    assert delta("recon_ratelimit_wait_seconds_count") == 1
    assert delta("recon_ratelimit_wait_seconds_sum") > 0.5
    assert delta("recon_ratelimit_deferrals_total") == 1


def test_the_sweeper_and_the_backfill_count_what_they_drive_again(
    clean_db, settings, client, sandbox
):
    from tests.factories import events
    from tests.ops.test_operations import age, store
    from worker.ops.sweep import find_stuck_work

    sandbox.register_coupon(6101, "919600006101")
    store(
        clean_db,
        events.coupon_redeemed("m-sweep", 6101, "919600006101"),
        events.transaction_completed("m-sweep", "919600006101"),
        events.redeem_requested("m-sweep-r", "919600006101"),
    )
    before = local()
    age(clean_db, settings.sweep_after_seconds + 5)
    found = find_stuck_work(clean_db, settings)
    assert (len(found.orders), len(found.redeem_requests)) == (1, 1)
    policy = Policy(max_attempts=2, retry_base_seconds=1)
    summary = backfill.run_backfill(clean_db, client, policy=policy, options=backfill.Options())
    assert summary.redriven == 1
    after = local()
    for name, labels, expected in (
        ("recon_sweeper_reenqueued_total", {"work": "order"}, 1),
        ("recon_sweeper_reenqueued_total", {"work": "redeem_request"}, 1),
        ("recon_backfill_redriven_total", {"kind": "coupon"}, 1),
        ("recon_outcomes_total", {"kind": "coupon", "code": "761"}, 1),
        ("recon_platform_calls_total", {"endpoint": "coupon_update", "http_class": "2xx"}, 1),
    ):
        assert total(after, name, **labels) - total(before, name, **labels) == expected, name


# --- gauges from PostgreSQL ---------------------------------------------------------------------


def _fill(session, now):
    bill = make_transaction(session)
    hour, day = dt.timedelta(hours=1), dt.timedelta(days=1)
    make_redemption(session, transaction_id=bill.id, state="pending", created_at=now - hour)
    make_redemption(session, transaction_id=bill.id, state="retrying", created_at=now - 2 * hour)
    make_redemption(session, transaction_id=bill.id, state="gave_up", created_at=now - 3 * day)
    make_redemption(session, transaction_id=bill.id, state="succeeded", created_at=now - 9 * day)
    # Waiting for a bill: unmatched once older than the threshold (a day here), not open work.
    make_redemption(session, kind="points", state="pending", created_at=now - 5 * day)
    make_redemption(session, kind="coupon", state="pending", created_at=now - 2 * day)
    make_redemption(session, kind="coupon", state="pending", created_at=now - hour)
    make_redeem_request(session, state="in_flight", created_at=now - 4 * hour)
    make_redeem_request(session, state="unknown", created_at=now - 6 * day)
    make_redeem_request(session, state="unknown", created_at=now - 6 * day)
    session.commit()


def test_the_gauges_read_open_work_its_age_unknown_redeems_and_unmatched_ones(session, clean_db):
    now = dt.datetime.now(dt.UTC)
    _fill(session, now)
    with clean_db.connect() as conn:
        readings = gauges.read_gauges(conn, now=now, unmatched_after=dt.timedelta(days=1))
    assert readings["open"] == {
        ("redemption", "pending"): 1,
        ("redemption", "retrying"): 1,
        ("redemption", "gave_up"): 1,
        ("redeem_request", "pending"): 0,
        ("redeem_request", "in_flight"): 1,
        ("redeem_request", "retrying"): 0,
        ("redeem_request", "gave_up"): 0,
    }
    assert readings["oldest"]["redemption"] == pytest.approx(3 * 86400, abs=5)
    assert readings["oldest"]["redeem_request"] == pytest.approx(4 * 3600, abs=5)
    assert readings["unknown"] == 2
    assert readings["unmatched"] == {"coupon": 1, "points": 1}


def test_every_gauge_query_can_be_answered_from_an_index(session, clean_db):
    now = dt.datetime.now(dt.UTC)
    _fill(session, now)
    statements = []

    def remember(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    with clean_db.connect() as conn:
        event.listen(conn, "before_cursor_execute", remember)
        gauges.read_gauges(conn, now=now, unmatched_after=dt.timedelta(days=1))
    assert len(statements) >= 10
    with clean_db.connect() as conn:
        # Tiny tables make a sequential scan cheapest; forbid it to see what the indexes offer.
        conn.execute(text("SET enable_seqscan = off"))
        for statement, parameters in statements:
            raw = conn.connection.dbapi_connection.cursor()
            raw.execute("EXPLAIN " + statement, parameters)
            plan = "\n".join(row[0] for row in raw.fetchall())
            assert "Seq Scan" not in plan, plan
            assert "Index Only Scan" in plan, plan


def test_a_database_that_cannot_answer_leaves_the_scrape_working(pg_url):
    from prometheus_client import CollectorRegistry

    from worker.settings import load_settings

    broken = load_settings({"RECON_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere"})
    registry = CollectorRegistry()
    registry.register(gauges.DatabaseGauges(broken))
    samples = parse(generate_latest(registry).decode())
    assert total(samples, "recon_db_gauges_up") == 0
    assert total(samples, "recon_ratelimit_budget_per_minute") == 1000
    working = gauges.DatabaseGauges(load_settings({"RECON_DATABASE_URL": pg_url}))
    registry = CollectorRegistry()
    registry.register(working)
    assert total(parse(generate_latest(registry).decode()), "recon_db_gauges_up") == 1


# --- the multiprocess directory -----------------------------------------------------------------


def test_directories_of_dead_workers_are_removed_and_live_ones_kept(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp_path / f"recon-metrics-{gone.pid}-abc"
    live = tmp_path / f"recon-metrics-{os.getppid()}-def"
    unrelated = tmp_path / f"other-{gone.pid}-x"
    for path in (dead, live, unrelated):
        path.mkdir()
        (path / "counter_1.db").write_bytes(b"")
    fresh = exporter.fresh_directory(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, unrelated.name, fresh.name]
    )
    assert fresh.name.startswith(f"recon-metrics-{os.getpid()}-")
    assert list(fresh.iterdir()) == []


def test_files_of_dead_processes_are_marked_dead_and_their_counters_kept(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    names = [
        f"counter_{gone.pid}.db",
        f"gauge_livesum_{gone.pid}.db",
        f"gauge_livesum_{os.getpid()}.db",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert exporter.mark_dead_processes(tmp_path) == [gone.pid]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names[0], names[2]])
