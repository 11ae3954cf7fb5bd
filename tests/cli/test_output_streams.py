"""Reports for people on stdout, JSON log lines on stderr: they never cut into each other, on a
terminal or redirected. `recon vendor push` (a report line per file, a log line per platform
call) runs from the installed product against PostgreSQL and the sandbox."""

from __future__ import annotations

import json
import os
import pty
import subprocess
from pathlib import Path

import pytest

from tests import shipped
from tests.conftest import SANDBOX_PASSWORD, SANDBOX_USER
from tests.factories.vendor import vendor_config, write_config

pytestmark = pytest.mark.e2e


@pytest.fixture
def push_env(pg_url, clean_db, sandbox) -> dict[str, str]:
    env = shipped.product_env(
        {
            "RECON_DATABASE_URL": pg_url,
            "LOYALTY_API_URL": sandbox.url,
            "LOYALTY_API_USERNAME": SANDBOX_USER,
            "LOYALTY_API_PASSWORD": SANDBOX_PASSWORD,
            "LOYALTY_RATE_LIMIT_PER_MINUTE": "60000",
            # The configurations hold apiHeaders values: the push needs the digest key.
            "RECON_VENDOR_DIGEST_KEY": "k" * 32,
        }
    )
    env.pop("RECON_LOG_LEVEL", None)  # as a person's shell has it
    return env


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    directory = tmp_path / "vendor-configs"
    directory.mkdir()
    for number in (1, 2, 3):
        write_config(directory, f"config-{number}.json", vendor_config(25770 + number, brandId=61))
    return directory


def on_a_terminal(argv: list[str], env: dict[str, str], cwd: Path) -> str:
    """What a person sees: stdout and stderr on one pseudo-terminal."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=terminal, stderr=terminal)
    os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the other side closed (Linux says EIO)
            break
        if not chunk:
            break
        seen += chunk
    os.close(controller)
    assert process.wait(timeout=120) == 0, seen.decode(errors="replace")
    return seen.decode(errors="replace")


def test_on_a_terminal_the_push_report_has_no_log_lines_in_it(push_env, configs, tmp_path):
    screen = on_a_terminal([shipped.RECON, "vendor", "push", str(configs)], push_env, tmp_path)
    lines = [line for line in screen.replace("\r\n", "\n").splitlines() if line.strip()]
    assert [line.split()[0] for line in lines[:3]] == ["pushed"] * 3
    assert lines[-1] == "3 file(s): 3 pushed, 0 invalid, 0 failed"
    assert len(lines) == 4, screen
    assert "{" not in screen


def test_redirected_the_report_is_on_stdout_and_every_log_line_is_json_on_stderr(
    push_env, configs, tmp_path
):
    done = subprocess.run(
        [shipped.RECON, "vendor", "push", str(configs)],
        env=push_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    report = done.stdout.splitlines()
    assert len(report) == 4
    assert "{" not in done.stdout
    logged = [json.loads(line) for line in done.stderr.splitlines()]
    # One line per call to the platform and one per outcome, each with the call's request id.
    assert [entry["event"] for entry in logged].count("loyalty.call") == 3
    assert [entry["event"] for entry in logged].count("vendor.outcome") == 3
    request_ids = {entry["request_id"] for entry in logged if entry["event"] == "loyalty.call"}
    assert all(any(rid in line for line in report) for rid in request_ids)
