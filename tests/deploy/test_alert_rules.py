"""deploy/prometheus/alerts.yml: valid for Prometheus, its alerts fire when they should, every
expression names only metrics the product really exports, and every alert has a description and a
runbook section whose commands are real `recon` commands."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import click
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from models.session import unit_of_work
from tests.prometheus import parse, require_prometheus_tool
from worker.cli import _register, cli
from worker.loyalty.types import Exchange
from worker.observe import gauges, metrics
from worker.observe.broker_gauges import BrokerGauges
from worker.reconcile.outcomes import Verdict, add_outcome, outcome_values

ROOT = Path(__file__).parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
RUNBOOK = ROOT / "docs" / "runbook.md"
PROMQL_WORDS = {
    "sum", "max", "min", "rate", "increase", "delta", "absent", "vector", "by", "without", "and",
    "or", "unless",
}  # fmt: skip
#: `up` is Prometheus's own: 1 when it scraped the target (a worker or beat), 0 when it could not.
PROMETHEUS_SERIES = {"up"}
#: What the alerts must page for (issue 17): workers down, intake paused, budget exhausted for
#: long, unknown redeems waiting, dead letters growing, backfill failing.
PAGES = {
    "ReconWorkerDown", "ReconNoWorkerUp", "ReconIntakePaused", "ReconRateBudgetExhausted",
    "ReconUnknownRedeems", "ReconDeadLettersGrowing", "ReconBackfillFailing",
}  # fmt: skip


def test_promtool_accepts_the_rules_and_their_unit_tests_pass():
    tool = require_prometheus_tool("promtool")
    for args in (["check", "rules", str(RULES)], ["test", "rules", str(RULE_TESTS)]):
        done = subprocess.run([tool, *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus-compose.yml"])
def test_promtool_accepts_the_prometheus_configurations_with_their_rules(config):
    tool = require_prometheus_tool("promtool")
    done = subprocess.run(
        [tool, "check", "config", str(RULES.parent / config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout  # alerts.yml, beside it


def exported_names(settings, engine) -> set[str]:
    """Every sample name a worker's /metrics shows once each event has happened (the broker
    gauges are read from this run's vhost, where the worker's queues are declared)."""
    with unit_of_work(engine) as session:
        add_outcome(
            session,
            outcome_values(
                kind="coupon",
                verdict=Verdict("succeeded", 761, "updated"),
                attempt=1,
                exchange=None,
                redemption_id="1",
                order_ref="o",
                customer=None,
                event_id=None,
            ),
        )
        session.commit()
    call = Exchange(
        method="PUT",
        path="/v2/coupon/redeem",
        http_status=429,
        request_id=None,
        elapsed_ms=3.0,
        request_excerpt="",
        response_excerpt="",
    )
    metrics.platform_call(call, code=521, result="rate_limited")
    metrics.ratelimit_slot()
    metrics.ratelimit_wait(0.1)
    metrics.ratelimit_deferral()
    metrics.intake_message("stored")
    metrics.sweeper_reenqueued("order")
    metrics.backfill_redriven("coupon")
    metrics.backfill_run(succeeded=True)
    registry = CollectorRegistry()
    registry.register(gauges.DatabaseGauges(settings))
    registry.register(BrokerGauges(settings))
    names = {name for name, _ in parse(generate_latest(registry).decode())}
    names |= {name for name, _ in parse(generate_latest(metrics.local_registry()).decode())}
    return names


def rules() -> list[dict]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def expressions() -> list[tuple[str, str]]:
    return [(rule["alert"], rule["expr"]) for rule in rules()]


@pytest.fixture
def broker_settings(settings, workers):
    """The test settings on this run's vhost, with the worker's queues declared in it."""
    return settings.replace(broker_url=workers.settings.broker_url)


def test_every_expression_names_only_metrics_the_product_exports(broker_settings, clean_db):
    exported = exported_names(broker_settings, clean_db) | PROMETHEUS_SERIES
    assert {"recon_outcomes_total", "recon_open_items", "recon_unknown_redeems"} <= exported
    assert {"recon_queue_messages", "recon_queue_consumers"} <= exported
    rules = expressions()
    assert {name for name, _ in rules} >= PAGES | {
        "ReconItemsGaveUp", "ReconOldestOpenItemTooOld", "ReconPlatformThrottling",
        "ReconRateBudgetSaturated", "ReconIntakeRejectsRising",
    }  # fmt: skip
    for name, expr in rules:
        # What is left once label matchers, groupings, ranges and numbers are gone: metric
        # names and PromQL's own words.
        bare = re.sub(r"\{[^}]*\}|\b(by|without)\s*\([^)]*\)|\[[^\]]*\]", " ", expr)
        words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare))
        unknown = {w for w in words - PROMQL_WORDS if w not in exported}
        assert not unknown, f"{name} names metrics the product does not export: {unknown}"
        assert words - PROMQL_WORDS, f"{name} names no metric at all"


def test_the_readme_lists_every_metric_and_every_alert(broker_settings, clean_db):
    readme = (ROOT / "README.md").read_text()
    exported = exported_names(broker_settings, clean_db)
    families = {re.sub(r"_(total|bucket|count|sum|created)$", "", name) for name in exported}
    missing = sorted(f for f in families if f"`{f}" not in readme)
    assert not missing, f"README's Metrics section lacks {missing}"
    alerts = sorted(name for name, _ in expressions() if f"`{name}`" not in readme)
    assert not alerts, f"README's Metrics section lacks the alerts {alerts}"


def runbook_sections() -> dict[str, str]:
    """Alert name -> its section of docs/runbook.md."""
    parts = re.split(r"^## ", RUNBOOK.read_text(), flags=re.MULTILINE)[1:]
    return {part.split("\n", 1)[0].strip(): part for part in parts}


def test_every_alert_has_a_description_and_a_runbook_section_that_says_what_to_do():
    sections = runbook_sections()
    for rule in rules():
        name, annotations = rule["alert"], rule["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(annotations), name
        assert annotations["runbook_url"] == f"docs/runbook.md#{name.lower()}", name
        assert name in sections, f"docs/runbook.md has no section ## {name}"
        for part in ("**What it means.**", "**How to look.**", "**What to do.**"):
            assert part in sections[name], f"{name}'s runbook section lacks {part}"
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
    assert set(sections) == {rule["alert"] for rule in rules()}, "a runbook section for no alert"
    paging = {rule["alert"] for rule in rules() if rule["labels"]["severity"] == "critical"}
    assert paging >= PAGES


def runbook_commands() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", RUNBOOK.read_text(), re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if line.startswith("recon ")]


@pytest.mark.parametrize("line", runbook_commands())
def test_every_recon_command_in_the_runbook_is_one_the_cli_accepts(line):
    _register()
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split, lexer.commenters = True, "#"
    tokens = list(lexer)
    # The command itself, without what the shell does with its output (> file, | jq ...).
    shell = [i for i, token in enumerate(tokens) if token in (">", ">>", "|", "<", "&&", ";")]
    words = tokens[1 : shell[0] if shell else None]
    command: click.Command = cli
    while isinstance(command, click.Group):
        name, *words = words
        assert name in command.commands, f"{line}: no such command {name!r}"
        command = command.commands[name]
    # Strict parsing: a misspelt option or a bad value raises here.
    command.make_context(command.name, words)
