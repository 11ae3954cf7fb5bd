"""A database that goes away is waited out, never mistaken for bad data, never a failed task."""

from __future__ import annotations

import json
import re
import socket
import time

import pytest
from sqlalchemy import exc, select, text

from models.outcomes import Outcome
from models.session import build_engine, database_unavailable, engine_for, unit_of_work
from tests import services
from tests.factories import events
from tests.workers import wait_for
from worker.reconcile.locks import lock_scope

MOBILE = "919812300000"


def _error_of(action) -> BaseException:
    try:
        action()
    except BaseException as error:
        return error
    raise AssertionError("the action did not fail")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _terminate_others(pg_url: str) -> int:
    """What a restart does to every connection of this database: end them (not ours)."""
    name = pg_url.rsplit("/", 1)[1]
    admin = build_engine(services.PG_ADMIN_URL)
    try:
        with admin.begin() as conn:
            return len(
                conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = :name AND pid <> pg_backend_pid()"
                    ),
                    {"name": name},
                ).all()
            )
    finally:
        admin.dispose()


def test_a_refused_connection_is_unavailable():
    engine = build_engine(f"postgresql://postgres@127.0.0.1:{_free_port()}/none")
    error = _error_of(lambda: engine.connect().close())
    assert database_unavailable(error)


def test_a_missing_database_is_unavailable(pg_url):
    engine = build_engine(pg_url.rsplit("/", 1)[0] + "/recon_does_not_exist")
    assert database_unavailable(_error_of(lambda: engine.connect().close()))


def test_a_statement_time_out_is_unavailable(pg_url):
    engine = engine_for(pg_url, statement_timeout_ms=100)
    with engine.connect() as conn:
        error = _error_of(lambda: conn.execute(text("SELECT pg_sleep(2)")))
    assert database_unavailable(error)


def test_a_connection_ended_by_the_server_is_unavailable(pg_url):
    engine = build_engine(pg_url, pool_pre_ping=False)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            _terminate_others(pg_url)
            error = _error_of(lambda: conn.execute(text("SELECT 1")))
        assert database_unavailable(error)
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT 'a' || :value",  # NUL: psycopg refuses it before the server sees it
        "SELECT CAST(:value AS integer)",
    ],
)
def test_data_the_database_refuses_is_not_an_outage(clean_db, statement):
    with clean_db.connect() as conn:
        error = _error_of(lambda: conn.execute(text(statement), {"value": "x\x00y"}))
    assert isinstance(error, exc.DBAPIError)
    assert not database_unavailable(error)


def test_an_integrity_error_is_not_an_outage(clean_db):
    with clean_db.connect() as conn:
        conn.execute(text("CREATE TEMP TABLE once (k int PRIMARY KEY)"))
        conn.execute(text("INSERT INTO once VALUES (1)"))
        error = _error_of(lambda: conn.execute(text("INSERT INTO once VALUES (1)")))
    assert not database_unavailable(error)


def test_locks_held_on_a_connection_the_server_ended_are_released_without_an_error(pg_url):
    engine = build_engine(pg_url, pool_pre_ping=False)
    try:
        with lock_scope(engine) as locks:
            assert locks.try_order("o-restart")
            _terminate_others(pg_url)
        # The advisory lock died with the server session: anyone can take it now.
        with lock_scope(engine) as locks:
            assert locks.try_order("o-restart")
    finally:
        engine.dispose()


@pytest.mark.e2e
def test_tasks_that_meet_a_database_restart_are_retried_not_failed(workers, clean_db, sandbox):
    """Every connection of the database ends while orders are mid-flight (slow platform answers
    keep tasks inside their locks); every item still succeeds and no task fails."""
    orders = 6
    sandbox.configure(slow_rate=1.0, slow_seconds=1.5)
    for number in range(orders):
        mobile = f"{MOBILE}{number}"
        sandbox.register_coupon(7100 + number, mobile)
        workers.publish(
            events.body(events.coupon_redeemed(f"db-{number}", 7100 + number, mobile)),
            events.body(events.transaction_completed(f"db-{number}", mobile)),
        )
    workers.start("w1", concurrency=2)

    def sent() -> int:
        return sandbox.stats()["total"]

    wait_for(lambda: sent() >= 1, timeout=60)
    assert _terminate_others(workers.settings.database_url) > 0
    time.sleep(0.5)  # let a second wave of connections be made, then end those too
    _terminate_others(workers.settings.database_url)
    sandbox.configure(slow_rate=0.0)

    def succeeded() -> int:
        with unit_of_work(clean_db) as session:
            rows = session.scalars(select(Outcome.redemption_id).where(Outcome.code == 761))
            return len(set(rows))

    wait_for(lambda: succeeded() == orders, timeout=120, interval=0.5)
    log = workers.log_of("w1")
    assert not re.search(r"Task recon\.\w+\[[^\]]+\] raised unexpected", log)
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    # The restart met tasks inside their transactions, and each of those was retried.
    met = {line["task_id"] for line in lines if line["event"] == "task.database_unavailable"}
    retried = {line.get("task_id") for line in lines if " retry: Retry in " in line["event"]}
    assert met
    assert met <= retried
    # Nothing else went wrong: no error and no traceback, and a session the restart broke
    # (PendingRollbackError) was met only where it is handled.
    assert [line for line in lines if line["level"] == "error" or "exception" in line] == []
    broken = {line["event"] for line in lines if "PendingRollbackError" in json.dumps(line)}
    assert broken <= {"task.database_unavailable", "locks.release_on_broken_connection"}
