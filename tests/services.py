"""Throw-away PostgreSQL databases and RabbitMQ vhosts on the machine's real servers."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import psycopg
from psycopg import sql

PG_ADMIN_URL = os.environ.get("RECON_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_BASE = os.environ.get("RECON_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
AMQP_USER = os.environ.get("RECON_TEST_AMQP_USER", "guest")


def _admin_conn() -> psycopg.Connection:
    return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=10)


def create_database(prefix: str = "recon_test", *, name: str | None = None) -> str:
    """Create an empty database (a fresh name unless given); return its SQLAlchemy URL."""
    name = name or f"{prefix}_{uuid.uuid4().hex[:10]}"
    with _admin_conn() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"


def drop_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with _admin_conn() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def create_role(prefix: str = "recon_test_service") -> str:
    """A login role with no privileges (roles belong to the whole server: the name is fresh)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with _admin_conn() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
    return name


def drop_role(name: str) -> None:
    """Drop a role made by ``create_role``, once the databases it had privileges in are gone."""
    with _admin_conn() as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def as_role(url: str, role: str) -> str:
    """The same database URL, connecting as ``role`` (the test server trusts local users)."""
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{role}@{rest.split('@', 1)[-1]}"


def _rabbitmqctl(*args: str) -> None:
    tool = shutil.which("rabbitmqctl")
    if tool is None:
        raise RuntimeError(
            "rabbitmqctl is not on PATH: the tests create a RabbitMQ vhost of their own with it; "
            "set RECON_TEST_AMQP_VHOST to an existing vhost to use that instead"
        )
    subprocess.run([tool, "-q", *args], check=True, capture_output=True, timeout=60)


def create_vhost(prefix: str = "recon_test") -> tuple[str, str]:
    """Create a vhost (or use RECON_TEST_AMQP_VHOST); return (broker URL, vhost name)."""
    fixed = os.environ.get("RECON_TEST_AMQP_VHOST")
    if fixed and int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        # Two test processes purging and declaring in one vhost would break each other's tests.
        raise RuntimeError(
            "RECON_TEST_AMQP_VHOST names one vhost for every test process: run the tests one at "
            "a time (make test TEST_PROCESSES=0, or pytest without -n)"
        )
    if fixed:
        return f"{AMQP_BASE}/{fixed}", ""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", name)
    _rabbitmqctl("set_permissions", "-p", name, AMQP_USER, ".*", ".*", ".*")
    return f"{AMQP_BASE}/{name}", name


def delete_vhost(name: str) -> None:
    if name:
        _rabbitmqctl("delete_vhost", name)
