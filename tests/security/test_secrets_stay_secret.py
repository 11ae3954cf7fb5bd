"""No secret leaves the process: Celery's remote `inspect conf` (what Flower's config page shows
to anyone on the broker) answers without a password, from a real worker on real RabbitMQ."""

from __future__ import annotations

import json
import socket
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests import services
from tests.conftest import SANDBOX_USER
from tests.shipped import CELERY
from tests.workers import Workers, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def broker_user(amqp_url: str) -> Iterator[tuple[str, str]]:
    """A RabbitMQ user of this test's own, with a password nothing else contains."""
    name, password = f"recon_sec_{uuid.uuid4().hex[:8]}", f"amqp-pw-{uuid.uuid4().hex}"
    vhost = amqp_url.rsplit("/", 1)[1]
    services._rabbitmqctl("add_user", name, password)
    try:
        services._rabbitmqctl("set_permissions", "-p", vhost, name, ".*", ".*", ".*")
        yield name, password
    finally:
        services._rabbitmqctl("delete_user", name)


@pytest.fixture
def secrets(pg_url: str, amqp_url: str, broker_user, sandbox, clean_db) -> dict[str, str]:
    user, amqp_password = broker_user
    return {
        # PostgreSQL here trusts local connections: the password is carried, never checked.
        "database": f"db-pw-{uuid.uuid4().hex}",
        "broker": amqp_password,
        "loyalty": f"loyalty-pw-{uuid.uuid4().hex}",
        "web": f"web-token-{uuid.uuid4().hex}",
        "_user": user,
    }


@pytest.fixture
def secret_workers(pg_url, amqp_url, sandbox, secrets, tmp_path) -> Iterator[Workers]:
    host_and_db = pg_url.split("@", 1)[1]
    base, vhost = amqp_url.rsplit("/", 1)
    broker = base.replace("guest:guest@", f"{secrets['_user']}:{secrets['broker']}@") + f"/{vhost}"
    env = {
        "RECON_DATABASE_URL": f"postgresql+psycopg://postgres:{secrets['database']}@{host_and_db}",
        "RECON_BROKER_URL": broker,
        "LOYALTY_API_URL": sandbox.url,
        "LOYALTY_API_USERNAME": SANDBOX_USER,
        "LOYALTY_API_PASSWORD": secrets["loyalty"],
        "RECON_WEB_TOKEN": secrets["web"],
    }
    pool = Workers(env, tmp_path)
    pool.declare()
    yield pool
    pool.stop()


def inspect(workers: Workers, *args: str, timeout: int = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CELERY, "-A", "worker.app", "inspect", *args, "--json", "--timeout", str(timeout)],
        env=workers.env,
        cwd=workers.log_dir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def ready(workers: Workers, node: str) -> bool:
    # A short wait per ping: a worker still starting does not answer, and ten seconds of silence
    # per try was most of this test's time.
    return inspect(workers, "ping", "-d", node, timeout=1).returncode == 0


@pytest.mark.parametrize("with_defaults", ["0", "1"], ids=["conf", "conf-with-defaults"])
def test_inspect_conf_shows_no_password_and_the_broker_url_masked(
    secret_workers, secrets, with_defaults
):
    secret_workers.start("sec1")
    node = f"sec1@{socket.gethostname()}"
    wait_for(lambda: ready(secret_workers, node), timeout=90, interval=1.0)

    answer = inspect(secret_workers, "conf", with_defaults, "-d", node)

    assert answer.returncode == 0, answer.stderr
    shown = answer.stdout + answer.stderr
    for name in ("database", "broker", "loyalty", "web"):
        assert secrets[name] not in shown, f"the {name} secret left the worker"
    conf = json.loads(answer.stdout)[node]
    # Celery shows the broker URL itself, with the password masked.
    assert conf["broker_url"] == (
        secret_workers.env["RECON_BROKER_URL"].replace(secrets["broker"], "********")
    )
