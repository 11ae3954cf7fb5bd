"""Operations: the sweeper, the backfill and an operator's resolution."""

from __future__ import annotations

import datetime as dt

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from models.outcomes import Outcome
from models.redemptions import PointsRedeemRequest, Redemption
from models.session import unit_of_work
from tests.factories import events
from worker.cli import _register, cli
from worker.intake.store import store_message
from worker.ops import backfill
from worker.ops.sweep import find_stuck_work
from worker.reconcile.orders import reconcile_order
from worker.reconcile.outcomes import Policy
from worker.reconcile.redeem import redeem_points

POLICY = Policy(max_attempts=2, retry_base_seconds=1)
MOBILE = "919600000001"
COUPON_PATH = "/v2/coupon/redeem"


def store(engine, *items):
    with unit_of_work(engine) as session:
        for event in items:
            store_message(session, events.body(event))
        session.commit()


def states(engine):
    with unit_of_work(engine) as session:
        rows = session.execute(select(Redemption.redemption_id, Redemption.state)).all()
    return dict(rows)


def age(engine, seconds):
    """Pretend the stored work was last touched ``seconds`` ago."""
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)
    with unit_of_work(engine) as session:
        session.execute(update(Redemption).values(updated_at=past))
        session.execute(update(PointsRedeemRequest).values(updated_at=past))
        session.commit()


def three_items(engine, sandbox):
    """Coupon 1 gives up (503s), coupon 2 fails (never issued), points P3 ends unknown."""
    sandbox.register_coupon(1, MOBILE)
    store(
        engine,
        events.coupon_redeemed("ops-1", 1, MOBILE),
        events.transaction_completed("ops-1", MOBILE),
    )
    store(
        engine,
        events.coupon_redeemed("ops-2", 2, MOBILE),
        events.transaction_completed("ops-2", MOBILE),
    )
    sandbox.script(COUPON_PATH, {"status": 503}, {"status": 503})


# --- sweeper ----------------------------------------------------------------------------------


def test_the_sweeper_finds_an_order_whose_task_was_lost(clean_db, settings, client, sandbox):
    sandbox.register_coupon(10, MOBILE)
    store(
        clean_db,
        events.coupon_redeemed("lost-1", 10, MOBILE),
        events.transaction_completed("lost-1", MOBILE),
    )
    # Stored, but the process died before its task was enqueued: nothing happens by itself.
    assert find_stuck_work(clean_db, settings).orders == set()  # not old enough yet
    age(clean_db, settings.sweep_after_seconds + 5)
    found = find_stuck_work(clean_db, settings)
    assert found.orders == {"lost-1"}
    for order_ref in found.orders:  # what the enqueued task does
        reconcile_order(clean_db, client, order_ref=order_ref, policy=POLICY)
    assert states(clean_db) == {"10": "succeeded"}
    age(clean_db, settings.sweep_after_seconds + 5)
    assert find_stuck_work(clean_db, settings).orders == set()


def test_the_sweeper_also_finds_a_redeem_request_left_in_flight(clean_db, settings):
    store(clean_db, events.redeem_requested("lost-2", MOBILE))
    age(clean_db, settings.sweep_after_seconds + 5)
    assert len(find_stuck_work(clean_db, settings).redeem_requests) == 1


def test_only_one_sweeper_scans_at_a_time(clean_db, settings):
    from worker.reconcile.locks import lock_scope

    store(clean_db, events.coupon_redeemed("lost-3", 30), events.transaction_completed("lost-3"))
    age(clean_db, settings.sweep_after_seconds + 5)
    with lock_scope(clean_db) as other_host:
        assert other_host.try_sweep()
        assert find_stuck_work(clean_db, settings).orders == set()
    assert find_stuck_work(clean_db, settings).orders == {"lost-3"}


# --- backfill ---------------------------------------------------------------------------------


def _give_up_and_fail(engine, client, sandbox):
    three_items(engine, sandbox)
    for _ in range(2):
        reconcile_order(engine, client, order_ref="ops-1", policy=POLICY)
    reconcile_order(engine, client, order_ref="ops-2", policy=POLICY)
    assert states(engine) == {"1": "gave_up", "2": "failed"}


def test_backfill_redrives_gave_up_and_leaves_failed_alone(clean_db, client, sandbox):
    _give_up_and_fail(clean_db, client, sandbox)
    summary = backfill.run_backfill(clean_db, client, policy=POLICY, options=backfill.Options())
    assert (summary.redriven, summary.succeeded, summary.failed, summary.still_open) == (1, 1, 0, 0)
    assert states(clean_db) == {"1": "succeeded", "2": "failed"}


def test_backfill_include_failed_tries_failed_ones_again(clean_db, client, sandbox):
    _give_up_and_fail(clean_db, client, sandbox)
    options = backfill.Options(include_failed=True)
    summary = backfill.run_backfill(clean_db, client, policy=POLICY, options=options)
    assert (summary.redriven, summary.succeeded, summary.failed) == (2, 1, 1)


def test_backfill_never_touches_an_unknown_redeem(clean_db, client, sandbox):
    sandbox.script("/v1.1/points/redeem", *[{"action": "lost"}] * 2)
    store(clean_db, events.redeem_requested("ops-3", MOBILE), events.transaction_completed("ops-3"))
    [request_id] = _request_ids(clean_db)
    for _ in range(2):
        redeem_points(clean_db, client, request_id=request_id, policy=POLICY)
    before = sandbox.stats()["total"]
    summary = backfill.run_backfill(clean_db, client, policy=POLICY, options=backfill.Options())
    assert summary.redriven == 0
    assert sandbox.stats()["total"] == before


def test_backfill_dry_run_sends_nothing_and_lists_what_it_would_do(clean_db, client, sandbox):
    _give_up_and_fail(clean_db, client, sandbox)
    before = sandbox.stats()["total"]
    options = backfill.Options(dry_run=True, include_failed=True)
    summary = backfill.run_backfill(clean_db, None, policy=None, options=options)
    assert sorted(c.redemption_id for c in summary.planned) == ["1", "2"]
    assert sandbox.stats()["total"] == before
    assert states(clean_db) == {"1": "gave_up", "2": "failed"}


def test_backfill_pages_through_many_items_in_chunks(clean_db, client, sandbox):
    for number in range(25):
        sandbox.register_coupon(500 + number, MOBILE)
        store(
            clean_db,
            events.coupon_redeemed(f"many-{number}", 500 + number, MOBILE),
            events.transaction_completed(f"many-{number}", MOBILE),
        )
    seen = []
    options = backfill.Options(chunk_size=4, kind="coupon")
    summary = backfill.run_backfill(
        clean_db, client, policy=POLICY, options=options, progress=seen.append
    )
    assert seen == [4, 4, 4, 4, 4, 4, 1]
    assert (summary.redriven, summary.succeeded) == (25, 25)


def _request_ids(engine):
    with unit_of_work(engine) as session:
        return list(session.scalars(select(PointsRedeemRequest.id)))


# --- the CLI ----------------------------------------------------------------------------------


@pytest.fixture
def recon(settings, monkeypatch):
    _register()
    for name, value in {
        "RECON_DATABASE_URL": settings.database_url,
        "LOYALTY_API_URL": settings.loyalty_api_url,
        "LOYALTY_API_USERNAME": settings.loyalty_api_username,
        "LOYALTY_API_PASSWORD": settings.loyalty_api_password.get_secret_value(),
        "RECON_MAX_ATTEMPTS": "2",
    }.items():
        monkeypatch.setenv(name, value)
    runner = CliRunner()
    return lambda *args: runner.invoke(cli, list(args), catch_exceptions=False)


def test_backfill_command_prints_its_summary(clean_db, client, sandbox, recon):
    _give_up_and_fail(clean_db, client, sandbox)
    dry = recon("backfill", "--dry-run")
    assert dry.exit_code == 0
    assert "Would re-drive 1 redemption" in dry.output
    result = recon("backfill", "--kind", "coupon")
    assert result.exit_code == 0, result.output
    assert (
        "re-driven 1 redemption(s) in 1 order(s): 1 succeeded, 0 failed, 0 still open"
        in result.output
    )


@pytest.mark.parametrize(
    "args",
    [
        ("backfill", "--since", "yesterday"),
        ("backfill", "--since", "2026-11-21", "--until", "2026-11-20"),
        ("backfill", "--kind", "vendor"),
        ("resolve", "nothing", "--reason", "x"),
        ("resolve", "nothing", "--confirmed", "--reason", "x"),
    ],
)
def test_bad_arguments_get_a_clear_message_and_exit_2(clean_db, recon, args):
    result = recon(*args)
    assert result.exit_code == 2
    assert "Error" in result.output


def _unknown_request(engine, client, sandbox):
    sandbox.script("/v1.1/points/redeem", *[{"action": "lost"}] * 2)
    store(
        engine,
        events.redeem_requested("ops-9", MOBILE),
        events.transaction_completed("ops-9", MOBILE),
    )
    [request_id] = _request_ids(engine)
    for _ in range(2):
        redeem_points(engine, client, request_id=request_id, policy=POLICY)
    with unit_of_work(engine) as session:
        request = session.get(PointsRedeemRequest, request_id)
        assert request.state == "unknown"
        return request.event_id


def test_resolve_confirmed_records_the_decision_and_the_redemption_reconciles(
    clean_db, client, sandbox, recon
):
    event_id = _unknown_request(clean_db, client, sandbox)
    # What the operator found in the platform's console for this customer.
    platform_id = "OPS9"
    sandbox.register_points(platform_id, MOBILE, points="25")
    result = recon(
        "resolve",
        event_id,
        "--confirmed",
        "--redemption-id",
        platform_id,
        "--reason",
        "seen in the platform console",
        "--operator",
        "ana",
    )
    assert result.exit_code == 0, result.output
    with unit_of_work(clean_db) as session:
        last = session.scalars(select(Outcome).order_by(Outcome.id.desc())).first()
        assert (last.status, last.operator, last.kind) == ("succeeded", "ana", "points_redeem")
        assert "seen in the platform console" in last.message
        assert session.scalars(select(Outcome.status).order_by(Outcome.id)).all()[:2] == [
            "retrying",
            "unknown",
        ]
    reconcile_order(clean_db, client, order_ref="ops-9", policy=POLICY)
    assert states(clean_db) == {platform_id: "succeeded"}
    again = recon("resolve", event_id, "--not-taken", "--reason", "changed my mind")
    assert again.exit_code == 1
    assert "not unknown" in again.output


def test_resolve_not_taken_closes_it_as_failed(clean_db, client, sandbox, recon):
    event_id = _unknown_request(clean_db, client, sandbox)
    result = recon("resolve", event_id, "--not-taken", "--reason", "customer balance unchanged")
    assert result.exit_code == 0, result.output
    with unit_of_work(clean_db) as session:
        assert session.scalars(select(PointsRedeemRequest.state)).one() == "failed"
