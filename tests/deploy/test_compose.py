"""compose.yaml runs real `recon` commands with variables the settings actually read."""

from __future__ import annotations

import json
from pathlib import Path

import click
import jsonschema
import pytest
import yaml

from worker.cli import _register, cli
from worker.settings import variables

HERE = Path(__file__).parents[1]  # tests/
COMPOSE = yaml.safe_load((HERE.parent / "compose.yaml").read_text())
RECON_SERVICES = ("migrate", "sandbox", "worker", "beat")
LONG_RUNNING = ("postgres", "rabbitmq", "sandbox", "worker", "beat", "flower")


def test_the_whole_product_is_in_compose():
    assert set(COMPOSE["services"]) == {"postgres", "rabbitmq", "flower", *RECON_SERVICES}
    for name in LONG_RUNNING:
        assert "healthcheck" in COMPOSE["services"][name], name


def test_flower_is_optional_and_the_workers_send_it_task_events():
    flower = COMPOSE["services"]["flower"]
    assert flower["profiles"] == ["flower"]
    assert "flower" in flower["command"]
    assert COMPOSE["x-recon-env"]["RECON_TASK_EVENTS"] == "true"


def test_compose_yaml_validates_against_the_compose_specification():
    schema = json.loads((HERE / "data" / "compose-spec.json").read_text())
    jsonschema.validate(COMPOSE, schema)
    # The same validator refuses a broken file, so the check above can fail.
    broken = {**COMPOSE, "services": {"worker": {"healthcheck": {"test": 5}}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def _celery_parse(name: str, args: list[str]) -> click.Context:
    from celery import Celery
    from celery.bin.base import CLIContext
    from celery.bin.beat import beat as celery_beat
    from celery.bin.worker import worker as celery_worker

    command = {"worker": celery_worker, "beat": celery_beat}[name]
    obj = CLIContext(app=Celery("compose-check"), no_color=True, workdir=None)
    return command.make_context(name, args, obj=obj)


def _parse(command: list[str]) -> click.Context:
    _register()
    subcommand = cli.commands.get(command[1])
    assert isinstance(subcommand, click.Command), f"recon {command[1]} does not exist"
    # Strict parsing: a misspelt option or a bad value raises here.
    return subcommand.make_context(command[1], list(command[2:]))


@pytest.mark.parametrize("service", RECON_SERVICES)
def test_each_service_runs_a_real_recon_subcommand(service):
    command = COMPOSE["services"][service]["command"]
    assert command[0] == "recon"
    context = _parse(command)
    assert context.command is cli.commands[command[1]]
    # Worker and beat pass the options they do not know on to Celery: Celery must know them.
    passed_on = list(context.params.get("celery_args") or ())
    if passed_on:
        _celery_parse(command[1], passed_on)


def test_a_broken_command_fails_to_parse():
    with pytest.raises(click.UsageError):
        _parse(["recon", "sandbox", "--port", "abc", "--nonsense", "x"])
    with pytest.raises(click.UsageError):
        _celery_parse("beat", ["--schedul", "/tmp/x"])


@pytest.mark.parametrize("service", RECON_SERVICES)
def test_each_variable_compose_sets_is_one_the_settings_read(service):
    environment = COMPOSE["services"][service]["environment"]
    unknown = sorted(set(environment) - {variable.name for variable in variables()})
    assert not unknown, f"{service} sets variables nothing reads: {unknown}"
