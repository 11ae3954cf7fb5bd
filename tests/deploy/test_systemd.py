"""deploy/systemd/: units systemd accepts, running real `recon` commands with settings the product
reads, and serving /metrics where deploy/prometheus/prometheus.yml looks."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import click
import pytest
import yaml

from tests import shipped
from worker.cli import _register, cli
from worker.settings import ENV_VARS, load_settings

ROOT = Path(__file__).parents[2]
UNITS = ROOT / "deploy" / "systemd"
INSTALLED_RECON = "/opt/recon/bin/recon"


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys keep their case
    parser.read_string((UNITS / name).read_text())
    return parser


def environment_files(name: str) -> list[str]:
    """Every EnvironmentFile= line in order (configparser keeps only the last of a repeated key)."""
    lines = (UNITS / name).read_text().splitlines()
    return [line.split("=", 1)[1] for line in lines if line.startswith("EnvironmentFile=")]


SERVICES = ("recon-worker@.service", "recon-beat.service", "recon-web.service")


@pytest.mark.parametrize("name", SERVICES)
def test_systemd_analyze_verify_accepts_each_unit(name, tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed here (the units are checked where it is)")
    # The unit as installed, pointing at the product as installed for these tests.
    text = (UNITS / name).read_text().replace(INSTALLED_RECON, shipped.RECON)
    (tmp_path / name).write_text(text)
    paths = [str(tmp_path / name)]
    if name.endswith("@.service"):
        (tmp_path / name.replace("@", "@1")).write_text(text)
        paths.append(str(tmp_path / name.replace("@", "@1")))
    done = subprocess.run(
        [tool, "verify", "--man=no", *paths], capture_output=True, text=True, timeout=120
    )
    # Warnings (an unknown key, a bad value) count as failures too, not only errors.
    assert done.returncode == 0, done.stderr
    assert not done.stderr.strip(), done.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_each_unit_runs_a_real_recon_command_as_an_unprivileged_user(name):
    service = unit(name)["Service"]
    argv = shlex.split(service["ExecStart"])
    assert argv[0] == INSTALLED_RECON
    _register()
    command = cli.commands[argv[1]]
    assert isinstance(command, click.Command)
    command.make_context(argv[1], argv[2:])  # strict: a misspelt option raises
    assert service["User"] == "recon"
    assert service["Restart"] == "always"
    assert service["KillSignal"] == "SIGTERM"
    assert environment_files(name)[0] == "/etc/recon/recon.env"


@pytest.mark.parametrize("name", ["recon-worker@.service", "recon-beat.service"])
def test_worker_and_beat_serve_metrics_where_the_host_prometheus_looks(name):
    files = environment_files(name)
    # Read after recon.env, so an empty RECON_METRICS_PORT= copied from .env.example loses.
    assert files.index("/etc/recon/metrics.env") == 1
    assert files[-1].startswith("-/etc/recon/")  # optional, per instance, read last
    metrics_env = dict(
        line.split("=", 1)
        for line in (UNITS / "metrics.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert set(metrics_env) <= set(ENV_VARS)
    settings = load_settings(metrics_env)
    assert settings.metrics_port == 0
    service = unit(name)["Service"]
    assert f"/run/{service['RuntimeDirectory']}" == settings.metrics_dir
    assert service["RuntimeDirectoryPreserve"] == "yes"  # one instance stopping keeps the others'
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    [job] = prometheus["scrape_configs"]
    assert job["file_sd_configs"][0]["files"] == [f"{settings.metrics_dir}/recon-*.json"]
