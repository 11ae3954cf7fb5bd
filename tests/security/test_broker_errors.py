"""A broker that refuses our login or vhost is one line, never a traceback, from every command that
talks to it (issue 13, finding 6: `recon publish` and `recon declare` printed py-amqp's traceback).
"""

from __future__ import annotations

import subprocess

import pytest

from tests import shipped
from tests.services import AMQP_BASE

PASSWORD = "hunter2-secret"
HOST = AMQP_BASE.rsplit("@", 1)[1]  # host:port of the shared broker
WRONG_LOGIN = f"amqp://recon-nobody:{PASSWORD}@{HOST}//"
MISSING_VHOST = f"{AMQP_BASE}/recon-no-such-vhost"
COMMANDS = {
    "publish": ["publish", "events.jsonl"],
    "declare": ["declare"],
    "worker": ["worker", "-c", "1"],
    "beat": ["beat"],
    "dead list": ["dead", "list"],
}


def recon(args: list[str], broker_url: str, cwd) -> subprocess.CompletedProcess:
    (cwd / "events.jsonl").write_text('{"type": "coupon.redeemed", "event_id": "e-1"}\n')
    env = {
        "RECON_BROKER_URL": broker_url,
        "RECON_DATABASE_URL": f"sqlite:///{cwd / 'recon.sqlite3'}",
        "LOYALTY_API_USERNAME": "till",
        "LOYALTY_API_PASSWORD": "till-secret",
    }
    return subprocess.run(
        [shipped.RECON, *args],
        env=shipped.product_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert PASSWORD not in result.stderr
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_a_refused_login_is_one_line_naming_the_credentials(command, tmp_path):
    line = one_line(recon(COMMANDS[command], WRONG_LOGIN, tmp_path))

    assert "refused the login" in line or "ACCESS_REFUSED" in line
    assert "recon-nobody" in line  # which user, so the operator knows which URL to fix


@pytest.mark.parametrize("command", ["publish", "declare", "worker"], ids=str)
def test_a_missing_vhost_is_one_line_naming_it(command, tmp_path):
    line = one_line(recon(COMMANDS[command], MISSING_VHOST, tmp_path))

    assert "vhost recon-no-such-vhost not found" in line
