"""Pooled connections are asked "are you there?" only after being idle a while: a busy worker
pays no round trip per checkout, and a connection the server ended while it sat in the pool is
replaced before anyone uses it. Real PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from models import session
from models.session import build_engine, database_unavailable, unit_of_work


@pytest.fixture
def pings(monkeypatch) -> list[int]:
    seen: list[int] = []
    monkeypatch.setattr(session, "PING_AFTER_IDLE_SECONDS", 0.3)
    monkeypatch.setattr(session, "ping_listeners", [lambda: seen.append(1)])
    return seen


@pytest.fixture
def engine(pg_url, pings) -> Iterator[Engine]:
    built = build_engine(pg_url, pool_size=1, max_overflow=0)
    yield built
    built.dispose()


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(pg_url: str, pid: int) -> None:
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_connection_in_use_a_moment_ago_is_handed_out_without_a_ping(engine, pings):
    for _ in range(20):
        with unit_of_work(engine) as work:
            work.execute(text("SELECT 1"))
            work.commit()
    assert pings == []


def test_an_idle_connection_the_server_ended_is_replaced_before_it_is_used(engine, pings, pg_url):
    first = _backend_pid(engine)
    _terminate(pg_url, first)
    time.sleep(0.4)  # idle past the threshold
    with unit_of_work(engine) as work:
        # No error reaches the caller: the ping found the dead connection, the pool opened anew.
        assert work.execute(text("SELECT pg_backend_pid()")).scalar_one() != first
    assert pings == [1]


def test_a_connection_ended_while_in_use_is_an_outage_the_caller_retries(engine, pings, pg_url):
    # Without a ping (in use a moment ago) the dead connection meets its next statement: the
    # error is a disconnect, which the task and the intake retry; the retry gets a new one.
    first = _backend_pid(engine)
    _terminate(pg_url, first)
    with pytest.raises(OperationalError) as ended, engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert database_unavailable(ended.value)
    assert pings == []
    assert _backend_pid(engine) != first
