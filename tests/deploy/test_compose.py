"""compose.yaml runs real `recon` commands with variables the settings actually read."""

from __future__ import annotations

import json
from pathlib import Path

import click
import jsonschema
import pytest
import yaml

from worker.cli import _register, cli
from worker.settings import ENV_VARS

HERE = Path(__file__).parents[1]  # tests/
ROOT = HERE.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
RECON_SERVICES = ("migrate", "sandbox", "worker", "beat", "web")
OBSERVABILITY = ("prometheus", "grafana")
LONG_RUNNING = (
    "postgres",
    "rabbitmq",
    "sandbox",
    "worker",
    "beat",
    "web",
    "flower",
    *OBSERVABILITY,
)


def test_the_whole_product_is_in_compose():
    expected = {"postgres", "rabbitmq", "flower", *RECON_SERVICES, *OBSERVABILITY}
    assert set(COMPOSE["services"]) == expected
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
    unknown = sorted(set(environment) - set(ENV_VARS))
    assert not unknown, f"{service} sets variables nothing reads: {unknown}"


def test_migrations_run_as_the_owner_and_the_service_as_a_role_that_owns_nothing():
    env = COMPOSE["x-recon-env"]
    migrate = COMPOSE["services"]["migrate"]["environment"]
    owner = migrate["RECON_DATABASE_URL"].split("://", 1)[1].split(":", 1)[0]
    service = env["RECON_DATABASE_URL"].split("://", 1)[1].split(":", 1)[0]
    assert owner != service
    assert migrate["RECON_DATABASE_SERVICE_ROLE"] == service
    for name in ("worker", "beat", "web"):
        environment = COMPOSE["services"][name]["environment"]
        assert environment["RECON_DATABASE_URL"] == env["RECON_DATABASE_URL"], name
    # The postgres image runs deploy/postgres/roles.sh on its first start; the file exists.
    postgres = COMPOSE["services"]["postgres"]
    [mount] = [v for v in postgres["volumes"] if "docker-entrypoint-initdb.d" in v]
    assert (ROOT / mount.split(":", 1)[0]).is_file()
    assert postgres["environment"]["POSTGRES_USER"] not in (owner, service)


def test_prometheus_and_grafana_are_optional_and_mount_files_of_this_repository():
    for name in OBSERVABILITY:
        service = COMPOSE["services"][name]
        assert service["profiles"] == ["observability"]
        assert all(port.startswith("127.0.0.1:") for port in service["ports"]), name
        for volume in service["volumes"]:
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"


def test_prometheus_scrapes_worker_and_beat_on_the_port_they_serve():
    scraped = yaml.safe_load((ROOT / "deploy/prometheus/prometheus-compose.yml").read_text())
    jobs = {job["job_name"]: job["dns_sd_configs"][0] for job in scraped["scrape_configs"]}
    for service, job in (("worker", "recon-worker"), ("beat", "recon-beat")):
        environment = COMPOSE["services"][service]["environment"]
        assert jobs[job]["names"] == [service]
        assert str(jobs[job]["port"]) == environment["RECON_METRICS_PORT"]
        # Reachable from the Prometheus container, not only from inside its own.
        assert environment["RECON_METRICS_HOST"] == "0.0.0.0"
        assert environment["RECON_METRICS_PORT"] in COMPOSE["services"][service]["expose"]
    assert "prometheus-compose.yml:/etc/prometheus/prometheus.yml:ro" in " ".join(
        COMPOSE["services"]["prometheus"]["volumes"]
    )


def test_the_web_page_is_served_on_this_host_only_and_with_a_token():
    web = COMPOSE["services"]["web"]
    assert web["ports"] == ["127.0.0.1:8790:8790"]
    assert web["command"][:2] == ["recon", "web"]
    assert web["environment"]["RECON_WEB_TOKEN"] == "${RECON_WEB_TOKEN:-}"  # from .env
