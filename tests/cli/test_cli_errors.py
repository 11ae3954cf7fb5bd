"""Bad settings and unreachable services: one line naming the problem, exit 1, every command."""

from __future__ import annotations

import subprocess

import pytest
from click.testing import CliRunner

from tests import shipped
from worker.cli import _register, cli

COMMANDS = [
    ["migrate"],
    ["worker"],
    ["beat"],
    ["sandbox", "--port", "0"],
    ["publish", "events.jsonl"],
    ["backfill", "--dry-run"],
    ["audit", "summary"],
    ["audit", "unknown"],
    ["resolve", "evt-1", "--not-taken", "--reason", "checked"],
    ["vendor", "push", "configs", "--dry-run"],
    ["demo"],
]
BASE = {
    "LOYALTY_API_USERNAME": "till",
    "LOYALTY_API_PASSWORD": "hunter2-secret",
}


def recon(args: list[str], env: dict[str, str], cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [shipped.RECON, *args],
        env=shipped.product_env({**BASE, **env}),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def one_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "hunter2" not in result.stderr
    return lines[0]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_every_command_names_a_malformed_database_url_in_one_line(
    args, tmp_path, monkeypatch: pytest.MonkeyPatch
):
    # In process (one subprocess per command would cost seconds each on a busy machine); the
    # subprocess tests below show the installed `recon` prints the same way.
    monkeypatch.chdir(tmp_path)
    for name, value in {**BASE, "RECON_DATABASE_URL": "garbage"}.items():
        monkeypatch.setenv(name, value)
    _register()
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "RECON_DATABASE_URL" in lines[0]
    assert not list(tmp_path.iterdir())  # no empty database file, nothing started


@pytest.mark.parametrize(
    ("variable", "value"),
    [("RECON_BROKER_URL", "nonsense"), ("RECON_MAX_ATTEMPTS", "many"), ("RECON_LOG_LEVEL", "loud")],
)
def test_a_bad_setting_is_one_line_naming_the_variable(variable, value, tmp_path):
    assert variable in one_line(recon(["audit", "summary"], {variable: value}, tmp_path))


@pytest.mark.parametrize(
    "args",
    [
        ["migrate"],
        ["backfill", "--dry-run"],
        ["audit", "unknown"],
        ["resolve", "e", "--not-taken", "--reason", "r"],
    ],
    ids=lambda a: a[0],
)
def test_an_unreachable_database_is_one_line(args, tmp_path):
    url = "postgresql://recon:hunter2-secret@127.0.0.1:1/recon"
    line = one_line(recon(args, {"RECON_DATABASE_URL": url}, tmp_path))
    assert "database" in line
    assert "127.0.0.1:1" in line


def test_an_unreachable_broker_is_one_line(tmp_path):
    (tmp_path / "events.jsonl").write_text('{"type": "transaction.completed"}\n')
    line = one_line(
        recon(
            ["publish", "events.jsonl"], {"RECON_BROKER_URL": "amqp://g:g@127.0.0.1:1//"}, tmp_path
        )
    )
    assert "broker" in line


def test_debug_shows_the_traceback(tmp_path):
    result = recon(["--debug", "audit", "summary"], {"RECON_DATABASE_URL": "garbage"}, tmp_path)
    assert result.returncode != 0
    assert "Traceback" in result.stderr
