"""compose.yaml runs real `recon` commands with variables the settings actually read."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
import yaml

from worker.cli import _register, cli
from worker.settings import ENV_VARS

COMPOSE = yaml.safe_load((Path(__file__).parent.parent / "compose.yaml").read_text())
RECON_SERVICES = ("migrate", "sandbox", "worker", "beat")


def test_the_whole_product_is_in_compose():
    assert set(COMPOSE["services"]) == {"postgres", "rabbitmq", *RECON_SERVICES}
    for name in ("postgres", "rabbitmq", "sandbox"):
        assert "healthcheck" in COMPOSE["services"][name], name


@pytest.mark.parametrize("service", RECON_SERVICES)
def test_each_service_runs_a_real_recon_subcommand(service):
    _register()
    command = COMPOSE["services"][service]["command"]
    assert command[0] == "recon"
    subcommand = cli.commands.get(command[1])
    assert isinstance(subcommand, click.Command), f"{service}: recon {command[1]} does not exist"
    # The options given parse as that command's own (unknown ones pass through to Celery).
    context = subcommand.make_context(command[1], list(command[2:]), resilient_parsing=True)
    assert context.command is subcommand


@pytest.mark.parametrize("service", RECON_SERVICES)
def test_each_variable_compose_sets_is_one_the_settings_read(service):
    environment = COMPOSE["services"][service]["environment"]
    unknown = sorted(set(environment) - set(ENV_VARS))
    assert not unknown, f"{service} sets variables nothing reads: {unknown}"
