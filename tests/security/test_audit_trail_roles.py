"""The audit trail is append-only for the role the service runs as (issue 13, deliverable 4).

PostgreSQL: the migrations run as a migration role that owns the tables; the service role gets
SELECT and INSERT on `outcomes` and `operator_log` and nothing it could rewrite them with.
SQLite (the demo): triggers refuse UPDATE and DELETE.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from tests import services, shipped

APPEND_ONLY = ("outcomes", "operator_log")
INSERTS = {
    "outcomes": (
        "INSERT INTO outcomes (at, kind, attempt, message, status) "
        "VALUES (:at, 'coupon', 1, 'ok', 'succeeded')"
    ),
    "operator_log": (
        "INSERT INTO operator_log (at, operator, action, reason, target) "
        "VALUES (:at, 'alice', 'dead.purge', 'test', 'recon.dead')"
    ),
}


def admin(url: str) -> psycopg.Connection:
    return psycopg.connect(url.replace("+psycopg", ""), autocommit=True)


def as_role(url: str, role: str) -> str:
    """The same database, connected as ``role`` (the test server trusts local connections)."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{role}@{rest.split('@', 1)[1]}"


def recon_migrate(url: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [shipped.RECON, "migrate"],
        env=shipped.product_env({"RECON_DATABASE_URL": url, **env}),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
def database() -> Iterator[str]:
    url = services.create_database("recon_roles")
    try:
        yield url
    finally:
        services.drop_database(url)


@pytest.fixture
def role_names(database: str) -> Iterator[dict[str, str]]:
    """A migration role (owner) and a service role of this test's own; dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    names = {"owner": f"recon_owner_{suffix}", "service": f"recon_svc_{suffix}"}
    with admin(services.PG_ADMIN_URL) as conn:
        for name in names.values():
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
        database_name = database.rsplit("/", 1)[1]
        conn.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(database_name), sql.Identifier(names["owner"])
            )
        )
    with admin(database) as conn:  # PostgreSQL 15: the schema public belongs to the db owner
        conn.execute(
            sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(names["owner"]))
        )
    try:
        yield names
    finally:
        services.drop_database(database)
        with admin(services.PG_ADMIN_URL) as conn:
            for name in names.values():
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
def migrated(database: str, role_names: dict[str, str]) -> dict[str, str]:
    """`recon migrate` run as the migration role, granting the service role."""
    done = recon_migrate(
        as_role(database, role_names["owner"]),
        RECON_DATABASE_SERVICE_ROLE=role_names["service"],
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return {
        "owner_url": as_role(database, role_names["owner"]),
        "service_url": as_role(database, role_names["service"]),
        **role_names,
    }


def refused(url: str, statement: str) -> str:
    """Run ``statement`` in its own transaction; return the database's refusal."""
    engine = create_engine(url)
    try:
        with pytest.raises(DBAPIError) as refusal, engine.begin() as conn:
            conn.execute(text(statement))
        return str(refusal.value.orig)
    finally:
        engine.dispose()


def run(url: str, statement: str, **params: object) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(text(statement), params)
            return [tuple(row) for row in result] if result.returns_rows else []
    finally:
        engine.dispose()


def test_the_service_role_may_read_and_append_but_never_rewrite_the_audit_trail(migrated):
    service = migrated["service_url"]
    now = dt.datetime.now(dt.UTC)
    for table in APPEND_ONLY:
        run(service, INSERTS[table], at=now)
        assert run(service, f"SELECT count(*) FROM {table}") == [(1,)]
        for statement in (
            f"UPDATE {table} SET at = at",
            f"DELETE FROM {table}",
            f"TRUNCATE {table}",
            f"ALTER TABLE {table} DISABLE TRIGGER ALL",
            f"ALTER TABLE {table} DISABLE TRIGGER {table}_append_only",
            f"DROP TABLE {table} CASCADE",
            f"ALTER TABLE {table} OWNER TO {migrated['service']}",
        ):
            refused(service, statement)
        # Triggers cannot be switched off for the session either: that is a superuser's right.
        assert "permission denied" in refused(service, "SET session_replication_role = replica")
        assert run(service, f"SELECT count(*) FROM {table}") == [(1,)]


def test_the_service_role_keeps_what_the_service_needs_elsewhere(migrated):
    tables = [
        row[0]
        for row in run(
            migrated["owner_url"],
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename NOT IN ('outcomes', 'operator_log', 'alembic_version')",
        )
    ]
    assert tables
    for table in tables:
        granted = run(
            migrated["owner_url"],
            "SELECT has_table_privilege(:role, :table, 'SELECT, INSERT'), "
            "has_table_privilege(:role, :table, 'UPDATE'), "
            "has_table_privilege(:role, :table, 'DELETE'), "
            "has_table_privilege(:role, :table, 'TRUNCATE')",
            role=migrated["service"],
            table=table,
        )
        assert granted == [(True, True, True, False)], table


def test_truncate_is_refused_even_to_the_role_that_owns_the_tables(migrated):
    # Only deliberately (dropping the trigger, or a superuser's session_replication_role) can
    # the audit trail be emptied; a careless TRUNCATE by the owner is refused too.
    for table in APPEND_ONLY:
        assert "append-only" in refused(migrated["owner_url"], f"TRUNCATE {table}")
        assert "append-only" in refused(migrated["owner_url"], f"TRUNCATE {table} CASCADE")


def test_recon_migrate_says_in_one_line_when_the_service_would_run_as_the_owner(
    database, role_names
):
    owner = as_role(database, role_names["owner"])
    done = recon_migrate(owner, RECON_DATABASE_SERVICE_ROLE=role_names["owner"])
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert role_names["owner"] in line
    assert "owns" in line


def test_recon_migrate_says_in_one_line_when_the_service_role_does_not_exist(database, role_names):
    owner = as_role(database, role_names["owner"])
    done = recon_migrate(owner, RECON_DATABASE_SERVICE_ROLE="recon_no_such_role")
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert "recon_no_such_role" in line
    assert "CREATE ROLE" in line


def test_recon_migrate_check_without_a_service_role_says_there_is_nothing_to_check(migrated):
    checked = subprocess.run(
        [shipped.RECON, "migrate", "--check"],
        env=shipped.product_env(
            {"RECON_DATABASE_URL": migrated["owner_url"], "RECON_DATABASE_SERVICE_ROLE": ""}
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert checked.returncode == 1
    [line] = checked.stderr.strip().splitlines()
    assert "RECON_DATABASE_SERVICE_ROLE is not set" in line


def test_recon_migrate_says_in_one_line_what_the_service_role_lacks(migrated):
    service = sql.Identifier(migrated["service"])
    with admin(migrated["owner_url"]) as conn:
        conn.execute(sql.SQL("REVOKE INSERT ON outcomes FROM {}").format(service))
        conn.execute(sql.SQL("GRANT TRUNCATE ON operator_log TO {}").format(service))
    checked = subprocess.run(
        [shipped.RECON, "migrate", "--check"],
        env=shipped.product_env(
            {
                "RECON_DATABASE_URL": migrated["owner_url"],
                "RECON_DATABASE_SERVICE_ROLE": migrated["service"],
            }
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert checked.returncode == 1
    [line] = checked.stderr.strip().splitlines()
    assert "INSERT on outcomes" in line
    assert "TRUNCATE on operator_log" in line
    # A plain `recon migrate` grants again what is missing and takes away what is too much.
    assert (
        recon_migrate(
            migrated["owner_url"], RECON_DATABASE_SERVICE_ROLE=migrated["service"]
        ).returncode
        == 0
    )
    run(migrated["service_url"], INSERTS["outcomes"], at=dt.datetime.now(dt.UTC))
    refused(migrated["service_url"], "TRUNCATE operator_log")


def test_sqlite_refuses_to_update_or_delete_the_audit_trail(tmp_path):
    url = f"sqlite:///{tmp_path / 'recon.sqlite3'}"
    done = recon_migrate(url)
    assert done.returncode == 0, done.stderr
    now = dt.datetime.now(dt.UTC)
    for table in APPEND_ONLY:
        run(url, INSERTS[table], at=now.isoformat())
        for statement in (f"UPDATE {table} SET at = at", f"DELETE FROM {table}"):
            assert "append-only" in refused(url, statement)
        assert run(url, f"SELECT count(*) FROM {table}") == [(1,)]


def test_the_documented_setup_from_nothing_gives_a_service_that_cannot_rewrite_history(
    database,
):
    """deploy/postgres/roles.sh (what compose runs on a new volume), then `recon migrate`."""
    suffix = uuid.uuid4().hex[:8]
    owner, service = f"recon_owner_{suffix}", f"recon_svc_{suffix}"
    script = Path(__file__).parents[2] / "deploy" / "postgres" / "roles.sh"
    admin_url = psycopg.conninfo.conninfo_to_dict(services.PG_ADMIN_URL)
    try:
        made = subprocess.run(
            ["sh", str(script)],
            env={
                "PATH": os.environ["PATH"],
                "PGHOST": str(admin_url.get("host", "127.0.0.1")),
                "PGPORT": str(admin_url.get("port", 5432)),
                "POSTGRES_USER": str(admin_url.get("user", "postgres")),
                "POSTGRES_DB": database.rsplit("/", 1)[1],
                "RECON_OWNER_ROLE": owner,
                "RECON_OWNER_PASSWORD": "owner-pw",
                "RECON_SERVICE_ROLE": service,
                "RECON_SERVICE_PASSWORD": "service-pw",
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert made.returncode == 0, made.stderr
        done = recon_migrate(as_role(database, owner), RECON_DATABASE_SERVICE_ROLE=service)
        assert done.returncode == 0, done.stderr
        service_url = as_role(database, service)
        run(service_url, INSERTS["outcomes"], at=dt.datetime.now(dt.UTC))
        for table in APPEND_ONLY:
            refused(service_url, f"TRUNCATE {table}")
            refused(service_url, f"DELETE FROM {table}")
        # Nor can it create a table of its own beside ours.
        refused(service_url, "CREATE TABLE public.shadow (id int)")
    finally:
        services.drop_database(database)
        with admin(services.PG_ADMIN_URL) as conn:
            for name in (owner, service):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
