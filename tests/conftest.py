"""Shared fixtures: the sandbox API over real sockets, real PostgreSQL, real RabbitMQ."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
import requests

from sandbox.config import SandboxConfig
from sandbox.server import Sandbox, start_sandbox

# pytest-xdist's worker processes (`make test` runs two) start with COLUMNS=80 and LINES=24 in
# their environment; a piped `recon audit` would then fold its tables to 80 columns, which no
# user's pipe does. The tests see the environment a plain run has.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)

SANDBOX_USER = "store.server"
SANDBOX_PASSWORD = "server123"
SANDBOX_OAUTH_KEY = "recon-key"
SANDBOX_OAUTH_SECRET = "recon-secret"


class SandboxAdmin:
    """Talks to the sandbox's /_admin endpoints, as a test would by hand."""

    def __init__(self, server: Sandbox) -> None:
        self.server = server
        self.url = server.url
        self.http = requests.Session()

    def _post(self, path: str, body: dict) -> dict:
        answer = self.http.post(f"{self.url}/_admin/{path}", json=body, timeout=10)
        answer.raise_for_status()
        return answer.json()

    def _get(self, path: str) -> dict:
        answer = self.http.get(f"{self.url}/_admin/{path}", timeout=10)
        answer.raise_for_status()
        return answer.json()

    def reset(self) -> None:
        self._post("reset", {})

    def configure(self, **config: object) -> dict:
        return self._post("config", config)

    def throttle(self, seconds: float) -> None:
        """The platform answers 429 to every request for the next ``seconds``."""
        self._post("throttle", {"seconds": seconds})

    def script(self, path: str, *faults: dict) -> None:
        self._post("script", {"path": path, "faults": list(faults)})

    def register_coupon(self, redemption_id: int, mobile: str, code: str = "C") -> None:
        customer = {"type": "mobile", "value": mobile}
        item = {"redemption_id": redemption_id, "customer": customer, "coupon_code": code}
        self._post("coupons", {"redemptions": [item]})

    def register_points(
        self,
        redemption_id: str | None,
        mobile: str,
        points: str = "10",
        *,
        external_reference_number: str | None = None,
        state: str = "active",
    ) -> None:
        item = {
            "redemption_id": redemption_id,
            "external_reference_number": external_reference_number,
            "customer": {"type": "mobile", "value": mobile},
            "points": points,
            "state": state,
        }
        self._post("points", {"redemptions": [item]})

    def coupon(self, redemption_id: int) -> dict:
        return self._get(f"coupons/{redemption_id}")

    def points(self, redemption_id: str) -> dict:
        return self._get(f"points/{redemption_id}")

    def stats(self) -> dict:
        return self._get("stats")

    def requests(self, path: str | None = None, limit: int = 100) -> list[dict]:
        query = f"requests?limit={limit}" + (f"&path={path}" if path else "")
        answer = self._get(query)
        return answer["requests"] if isinstance(answer, dict) else answer


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[Sandbox]:
    config = SandboxConfig(
        users={SANDBOX_USER: SANDBOX_PASSWORD},
        oauth_clients={SANDBOX_OAUTH_KEY: SANDBOX_OAUTH_SECRET},
        rate_limit_per_minute=0,
    )
    server = start_sandbox(config)
    yield server
    server.stop()


@pytest.fixture
def sandbox(sandbox_server: Sandbox) -> Iterator[SandboxAdmin]:
    """A sandbox with empty state, no faults and no rate limit, for one test."""
    admin = SandboxAdmin(sandbox_server)
    admin.reset()
    admin.configure(
        error_rate=0.0,
        slow_rate=0.0,
        drop_rate=0.0,
        lost_rate=0.0,
        rate_limit_per_minute=0,
        rate_window_seconds=60,
    )
    yield admin
    admin.http.close()


# --- PostgreSQL -------------------------------------------------------------------------------

from sqlalchemy import Engine, text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from models.session import build_engine  # noqa: E402
from tests import services, shipped  # noqa: E402
from worker.ops import migrate  # noqa: E402

TABLES = (
    "outcomes, transaction_links, points_redeem_requests, redemptions, transactions, "
    "inbox_events, rate_limits, rate_limit_slots, vendor_configs, operator_log, "
    "dead_tasks"
)


@pytest.fixture(scope="session")
def pg_service_role() -> Iterator[str]:
    """A role of this run's own that the service runs as: it owns nothing (README, "Database
    roles"). Roles belong to the whole server, so its name is unique; it goes at the end."""
    role = services.create_role()
    try:
        yield role
    finally:
        services.drop_role(role)


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory: pytest.TempPathFactory, pg_service_role: str) -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, built by the migrations.

    The migrations run as the administrator (the migration role, owner of every table) and
    grant the service role its privileges, as `recon migrate` does in production.
    """
    url = services.create_database()
    try:
        if shipped.VENV:
            # The installed wheel's own `recon migrate`: its migrations are the ones that ship.
            subprocess.run(
                [shipped.RECON, "migrate"],
                env=shipped.product_env(
                    {"RECON_DATABASE_URL": url, "RECON_DATABASE_SERVICE_ROLE": pg_service_role}
                ),
                cwd=tmp_path_factory.mktemp("migrate"),
                check=True,
                capture_output=True,
                timeout=300,
            )
        else:
            migrate.upgrade(url)
            verdict = migrate.settle_service_role(url, role=pg_service_role, grant=True)
            assert verdict.problem is None, verdict.problem
        yield url
    finally:
        services.drop_database(url)


@pytest.fixture(scope="session")
def pg_service_url(pg_url: str, pg_service_role: str) -> str:
    """The test database as the service sees it: connected as the service role."""
    return services.as_role(pg_url, pg_service_role)


@pytest.fixture(scope="session")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    # Shared by every test, some of which end every other server session on purpose: checked
    # at each checkout, as the product checks only connections idle for a while.
    engine = build_engine(pg_url, pool_pre_ping=True)
    yield engine
    engine.dispose()


@pytest.fixture
def clean_db(pg_engine: Engine) -> Engine:
    """The test database, emptied. Tests whose workers commit need real, committed rows."""
    with pg_engine.begin() as conn:
        # The audit trail refuses TRUNCATE (a trigger); the superuser may switch triggers off for
        # its own transaction, which the service role may not.
        conn.execute(text("SET LOCAL session_replication_role = replica"))
        conn.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
    return pg_engine


@pytest.fixture
def session(clean_db: Engine) -> Iterator[Session]:
    with Session(clean_db, expire_on_commit=False) as db_session:
        yield db_session


# --- RabbitMQ ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    """A RabbitMQ vhost of this test run's own, deleted afterwards."""
    url, vhost = services.create_vhost()
    try:
        yield url
    finally:
        services.delete_vhost(vhost)


# --- The worker's own pieces, wired to the test database and the sandbox ----------------------


@pytest.fixture
def settings(pg_url: str, sandbox: SandboxAdmin):
    from worker.settings import load_settings

    return load_settings(
        {
            "RECON_DATABASE_URL": pg_url,
            "LOYALTY_API_URL": sandbox.url,
            "LOYALTY_API_USERNAME": SANDBOX_USER,
            "LOYALTY_API_PASSWORD": SANDBOX_PASSWORD,
            "RECON_MAX_ATTEMPTS": "3",
            "RECON_RETRY_BASE_SECONDS": "1",
        }
    )


@pytest.fixture
def client(settings):
    from worker.loyalty import LoyaltyClient

    loyalty = LoyaltyClient.from_settings(settings)
    yield loyalty
    loyalty.close()


@pytest.fixture
def workers(pg_service_url: str, amqp_url: str, sandbox: SandboxAdmin, clean_db: Engine, tmp_path):
    """Real worker processes (started by the test) on the test database, vhost and sandbox.

    They connect as the service role, as in production: what they do must need no more than
    `recon migrate` grants it.
    """
    from tests.workers import Workers

    env = {
        "RECON_DATABASE_URL": pg_service_url,
        "RECON_BROKER_URL": amqp_url,
        "LOYALTY_API_URL": sandbox.url,
        "LOYALTY_API_USERNAME": SANDBOX_USER,
        "LOYALTY_API_PASSWORD": SANDBOX_PASSWORD,
        "RECON_MAX_ATTEMPTS": "3",
        "RECON_RETRY_BASE_SECONDS": "1",
        "RECON_LOG_LEVEL": "INFO",
    }
    pool = Workers(env, tmp_path)
    pool.declare()
    pool.purge()
    yield pool
    pool.stop()
    pool.purge()
