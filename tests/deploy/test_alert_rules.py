"""deploy/prometheus/alerts.yml: valid for Prometheus, its alerts fire when they should, and
every expression names only metrics the product really exports."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from models.session import unit_of_work
from tests.prometheus import parse
from worker.loyalty.types import Exchange
from worker.observe import gauges, metrics
from worker.reconcile.outcomes import Verdict, add_outcome

ROOT = Path(__file__).parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
PROMQL_WORDS = {"sum", "max", "min", "rate", "increase", "by", "without", "and", "or", "unless"}


def promtool() -> str | None:
    beside = Path(sys.executable).parent / "promtool"  # where `make test` puts it
    return str(beside) if beside.exists() else shutil.which("promtool")


def test_promtool_accepts_the_rules_and_their_unit_tests_pass():
    tool = promtool()
    if tool is None:
        message = "promtool is not installed (make test installs it: scripts/install-promtool)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    for args in (["check", "rules", str(RULES)], ["test", "rules", str(RULE_TESTS)]):
        done = subprocess.run([tool, *args], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr


def exported_names(settings, engine) -> set[str]:
    """Every sample name a worker's /metrics shows once each event has happened."""
    with unit_of_work(engine) as session:
        add_outcome(
            session,
            kind="coupon",
            verdict=Verdict("succeeded", 761, "updated"),
            attempt=1,
            exchange=None,
            redemption_id="1",
            order_ref="o",
            customer=None,
            event_id=None,
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
    registry = CollectorRegistry()
    registry.register(gauges.DatabaseGauges(settings))
    names = {name for name, _ in parse(generate_latest(registry).decode())}
    names |= {name for name, _ in parse(generate_latest(metrics.local_registry()).decode())}
    return names


def expressions() -> list[tuple[str, str]]:
    document = yaml.safe_load(RULES.read_text())
    return [
        (rule["alert"], rule["expr"]) for group in document["groups"] for rule in group["rules"]
    ]


def test_every_expression_names_only_metrics_the_product_exports(settings, clean_db):
    exported = exported_names(settings, clean_db)
    assert {"recon_outcomes_total", "recon_open_items", "recon_unknown_redeems"} <= exported
    rules = expressions()
    assert {name for name, _ in rules} >= {
        "ReconItemsGaveUp", "ReconUnknownRedeems", "ReconOldestOpenItemTooOld",
        "ReconPlatformThrottling", "ReconRateBudgetSaturated", "ReconIntakeRejectsRising",
    }  # fmt: skip
    for name, expr in rules:
        # What is left once label matchers, groupings, ranges and numbers are gone: metric
        # names and PromQL's own words.
        bare = re.sub(r"\{[^}]*\}|\b(by|without)\s*\([^)]*\)|\[[^\]]*\]", " ", expr)
        words = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare))
        unknown = {w for w in words - PROMQL_WORDS if w not in exported}
        assert not unknown, f"{name} names metrics the product does not export: {unknown}"
        assert words - PROMQL_WORDS, f"{name} names no metric at all"


def test_the_readme_lists_every_metric_and_every_alert(settings, clean_db):
    readme = (ROOT / "README.md").read_text()
    exported = exported_names(settings, clean_db)
    families = {re.sub(r"_(total|bucket|count|sum|created)$", "", name) for name in exported}
    missing = sorted(f for f in families if f"`{f}" not in readme)
    assert not missing, f"README's Metrics section lacks {missing}"
    alerts = sorted(name for name, _ in expressions() if f"`{name}`" not in readme)
    assert not alerts, f"README's Metrics section lacks the alerts {alerts}"
