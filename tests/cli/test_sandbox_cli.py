"""`recon sandbox` says at start who may log in, and those credentials are the ones it accepts."""

from __future__ import annotations

import base64
import hashlib
import re
import signal
import subprocess

import pytest
import requests

from tests import shipped

pytestmark = pytest.mark.e2e


def started(*args: str) -> tuple[subprocess.Popen[str], str, str]:
    """A sandbox on a free port: the process, its URL and the line naming its users."""
    process = subprocess.Popen(
        [shipped.RECON, "sandbox", "--port", "0", *args],
        env=shipped.product_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    listening, logins = process.stdout.readline(), process.stdout.readline()
    url = re.search(r"listening on (http://\S+)", listening)
    assert url, listening
    return process, url.group(1), logins.strip()


def basic(user: str, password: str) -> str:
    digest = hashlib.md5(password.encode()).hexdigest()
    return "Basic " + base64.b64encode(f"{user}:{digest}".encode()).decode()


def status_for(url: str, authorization: str) -> int:
    answer = requests.put(
        f"{url}/v2/coupon/redeem",
        json={"redemptions": [], "user": {"mobile": "919800000001"}},
        headers={"Authorization": authorization},
        timeout=10,
    )
    return answer.status_code


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def test_the_sandbox_prints_its_built_in_till_user_which_it_accepts():
    process, url, logins = started()
    try:
        assert logins == (
            "till users (Basic auth): store.server (password server123); "
            "OAuth client keys: recon-key"
        )
        user, password = re.search(r": (\S+) \(password (\S+)\)", logins).groups()
        assert status_for(url, basic(user, password)) != 401
        assert status_for(url, basic(user, "wrong")) == 401
    finally:
        stop(process)


def test_a_till_user_given_with_user_replaces_it_and_its_password_is_not_printed():
    process, url, logins = started("--user", "till.7:s3cret-pw")
    try:
        assert logins.startswith("till users (Basic auth): till.7;")
        assert "s3cret" not in logins
        assert status_for(url, basic("till.7", "s3cret-pw")) != 401
        assert status_for(url, basic("store.server", "server123")) == 401
    finally:
        stop(process)


def test_sandbox_help_names_the_till_user():
    shown = subprocess.run(
        [shipped.RECON, "sandbox", "--help"],
        env=shipped.product_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "store.server" in shown
    assert "server123" in shown
    assert "--user NAME:PASSWORD" in shown
