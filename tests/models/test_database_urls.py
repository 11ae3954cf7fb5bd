"""A database named by all its hosts (a primary with a standby, issue 15).

Every process takes libpq's host list; a list that cannot work is refused by a line that names
the variable and never the password; and a session the server stopped taking writes on (a
demoted or fenced primary) is replaced by the next checkout, with no restart. The failover
itself, with a real standby promoted, is chaos phase (g): seconds here, a minute there.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from bench.infra import free_port
from models.session import build_engine, database_unavailable, normalise_url, unit_of_work
from worker.cli import _register, cli
from worker.observe.masking import redact_text
from worker.settings import SettingsError, load_settings
from worker.web.queries import read_only_engine

SECRET = "hunter2-db-secret"
LIBPQ_FORM = (
    f"postgresql://recon:{SECRET}@db1.example:5432,db2.example:5433/recon"
    "?target_session_attrs=read-write"
)


def _connect_args(url: str) -> dict:
    parsed = make_url(normalise_url(url))
    return parsed.get_dialect()().create_connect_args(parsed)[1]


def _with_a_dead_host_first(url: str) -> str:
    """The test database, named after a host that refuses connections (a stopped primary)."""
    parsed = make_url(url)
    head = url.split("@", 1)[0]
    return (
        f"{head}@127.0.0.1:{free_port()},{parsed.host}:{parsed.port}/{parsed.database}"
        "?target_session_attrs=read-write"
    )


@pytest.mark.parametrize(
    "url",
    [
        LIBPQ_FORM,
        # SQLAlchemy's own spelling of the same list.
        f"postgresql://recon:{SECRET}@/recon?host=db1.example:5432&host=db2.example:5433"
        "&target_session_attrs=read-write",
    ],
)
def test_a_host_list_reaches_libpq_as_one(url):
    settings = load_settings({"RECON_DATABASE_URL": url})
    options = _connect_args(settings.database_url)
    assert options["host"] == "db1.example,db2.example"
    assert options["port"] == "5432,5433"
    assert options["target_session_attrs"] == "read-write"
    assert options["password"] == SECRET


@pytest.mark.parametrize(
    ("url", "says"),
    [
        (LIBPQ_FORM.split("?")[0], "target_session_attrs=read-write"),
        (LIBPQ_FORM.replace("read-write", "sometimes"), "must be one of"),
        (LIBPQ_FORM.replace(":5433", ":99999"), "1-65535"),
        (LIBPQ_FORM.replace(",db2", ",,db2"), "entry 2 of the host list"),
        (LIBPQ_FORM.replace(":5433", ":5433x"), "entry 2 of the host list"),
        (LIBPQ_FORM + "&host=db3.example", "names its hosts twice"),
        (
            f"postgresql://recon:{SECRET}@/recon?host=a,b&port=1,2,3"
            "&target_session_attrs=read-write",
            "do not pair up",
        ),
    ],
)
def test_a_host_list_that_cannot_work_is_refused_without_the_password(url, says):
    with pytest.raises(SettingsError) as info:
        load_settings({"RECON_DATABASE_URL": url})
    message = str(info.value)
    assert message.startswith("invalid configuration: RECON_DATABASE_URL: ")
    assert says in message
    assert SECRET not in message


def test_the_password_of_a_url_is_masked_in_any_text():
    line = f"cannot reach {LIBPQ_FORM} nor amqp://guest:{SECRET}@mq1:5672//;amqp://g:{SECRET}@mq2"
    shown = redact_text(line)
    assert SECRET not in shown
    assert "recon:***@db1.example:5432,db2.example:5433/recon" in shown


def test_the_cli_names_an_unreachable_host_list_masked(monkeypatch):
    dead = f"postgresql://recon:{SECRET}@127.0.0.1:{free_port()},127.0.0.1:{free_port()}/recon"
    _register()
    result = CliRunner().invoke(
        cli,
        ["audit", "summary"],
        env={"RECON_DATABASE_URL": dead + "?target_session_attrs=read-write"},
    )
    assert result.exit_code == 1
    assert "cannot query the database at" in result.output
    assert "recon:***@" in result.output
    assert SECRET not in result.output


def test_a_stopped_first_host_is_skipped_by_writers_the_migrations_and_the_page(
    pg_url, pg_service_role
):
    listed = _with_a_dead_host_first(pg_url)
    _register()
    migrated = CliRunner().invoke(
        cli,
        ["migrate"],
        env={"RECON_DATABASE_URL": listed, "RECON_DATABASE_SERVICE_ROLE": pg_service_role},
    )
    assert migrated.exit_code == 0, migrated.output
    engine = build_engine(listed, pool_size=1, max_overflow=0)
    try:
        with unit_of_work(engine) as session:
            session.execute(text("CREATE TEMP TABLE written (n int)"))
            session.execute(text("INSERT INTO written VALUES (1)"))
            session.commit()
    finally:
        engine.dispose()
    # The page's sessions are read-only by their own setting, which read-write would count
    # against every host; it still finds the primary, and still cannot write there.
    page = read_only_engine(listed)
    with page.connect() as conn:
        assert conn.execute(text("SELECT pg_is_in_recovery()")).scalar() is False
        with pytest.raises(DBAPIError, match="read-only transaction"):
            conn.execute(text("CREATE TEMP TABLE nope (n int)"))


def test_a_session_the_server_stopped_taking_writes_on_is_replaced_by_the_next_checkout(pg_url):
    engine = build_engine(_with_a_dead_host_first(pg_url), pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            # What a demoted or fenced primary does to a session it keeps: writes refused.
            conn.execute(text("SET SESSION default_transaction_read_only = on"))
            conn.commit()
        with pytest.raises(DBAPIError) as refused, unit_of_work(engine) as session:
            session.execute(text("CREATE TEMP TABLE written (n int)"))
        assert "read-only transaction" in str(refused.value)
        assert database_unavailable(refused.value)  # the task or the intake retries it
        # The one pooled connection was the refused one: without being told, the pool opens a
        # new one, through the host list, and the retry writes.
        with unit_of_work(engine) as session:
            session.execute(text("CREATE TEMP TABLE written (n int)"))
            session.commit()
    finally:
        engine.dispose()
