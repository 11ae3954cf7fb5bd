"""Each compose health check passes against its live service and fails once it has stopped.

The services run here as real processes of the installed product (outside Docker), started with
the command compose.yaml gives them and the environment compose would set: the shared
`x-recon-env` with this run's database, vhost and sandbox in place of the compose host names,
and HOSTNAME, which Docker sets to the container's host name. Each health check runs exactly as
written in compose.yaml: CMD-SHELL through /bin/sh -c, CMD as an argument list.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest
import yaml

from tests import shipped
from tests.conftest import SANDBOX_PASSWORD, SANDBOX_USER
from tests.workers import wait_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def compose_env(pg_url: str, amqp_url: str, sandbox_url: str) -> dict[str, str]:
    env = {name: str(value) for name, value in COMPOSE["x-recon-env"].items()}
    env.update(
        RECON_DATABASE_URL=pg_url,
        RECON_BROKER_URL=amqp_url,
        LOYALTY_API_URL=sandbox_url,
        LOYALTY_API_USERNAME=SANDBOX_USER,
        LOYALTY_API_PASSWORD=SANDBOX_PASSWORD,
        HOSTNAME=socket.gethostname(),
    )
    # The image has the product's executables (recon, celery, python) first on PATH.
    path = f"{shipped.BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    return shipped.product_env({**env, "PATH": path})


def health_check(service: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    test = COMPOSE["services"][service]["healthcheck"]["test"]
    if test[0] == "CMD-SHELL":
        # Compose turns `$$` into a literal `$` before the shell sees the command.
        argv = ["/bin/sh", "-c", test[1].replace("$$", "$")]
    else:
        assert test[0] == "CMD", test
        argv = [arg.replace("$$", "$") for arg in test[1:]]
    return subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def start(service: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[bytes]:
    command = COMPOSE["services"][service]["command"]
    log = (cwd / f"{service}.log").open("wb")
    return subprocess.Popen(command, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def passes(service: str, env: dict[str, str], cwd: Path) -> bool:
    return health_check(service, env, cwd).returncode == 0


@pytest.fixture
def env(pg_service_url, amqp_url, sandbox):
    # Worker and beat connect as the service role, as compose runs them.
    return compose_env(pg_service_url, amqp_url, sandbox.url)


#: What a service's own environment adds, as an operator's .env would fill it.
SERVICE_ENV = {"web": {"RECON_WEB_TOKEN": "compose-health-check-token"}}


@pytest.mark.parametrize("service", ["worker", "beat", "sandbox", "web"])
def test_the_health_check_passes_while_the_service_runs_and_fails_once_it_stopped(
    service, env, tmp_path
):
    env = {**env, **SERVICE_ENV.get(service, {})}
    # Before the service starts, nothing answers: the check is not true regardless.
    assert not passes(service, env, tmp_path)
    process = start(service, env, tmp_path)
    try:
        wait_for(lambda: process.poll() is not None or passes(service, env, tmp_path), 90, 1.0)
        assert process.poll() is None, (tmp_path / f"{service}.log").read_text()
        result = health_check(service, env, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        stop(process)
    result = health_check(service, env, tmp_path)
    assert result.returncode != 0, result.stdout + result.stderr


def image_health_check(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """The Dockerfile's HEALTHCHECK command, as Docker runs it (CMD: an argument list)."""
    [check] = re.findall(r"^\s+CMD (\[.+\])$", DOCKERFILE, re.MULTILINE)
    return subprocess.run(
        json.loads(check), env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_the_image_health_check_passes_while_a_worker_serves_metrics_and_fails_once_it_stopped(
    env, tmp_path
):
    # Any port (RECON_METRICS_PORT=0): the check finds it in the worker's target file.
    env = {**env, "RECON_METRICS_PORT": "0", "RECON_METRICS_DIR": str(tmp_path / "metrics")}
    before = image_health_check(env, tmp_path)
    assert before.returncode == 1
    assert "no recon worker or beat announces /metrics" in before.stderr
    process = start("worker", env, tmp_path)
    try:
        wait_for(
            lambda: process.poll() is not None or image_health_check(env, tmp_path).returncode == 0,
            90,
            1.0,
        )
        assert process.poll() is None, (tmp_path / "worker.log").read_text()
    finally:
        stop(process)
    assert image_health_check(env, tmp_path).returncode == 1
