"""deploy/grafana/recon.json: every panel's query returns data from a real Prometheus scraping a
real `recon worker` and `recon beat` (the installed wheel) during an end-to-end run through
RabbitMQ, PostgreSQL and the sandbox, with the alert rules loaded.

Prometheus is Debian's (scripts/install-prometheus), configured from deploy/prometheus/
prometheus.yml with only its paths and intervals changed: it finds the worker and beat through
the target files they write (both pick a free port, RECON_METRICS_PORT=0). Grafana itself is not
needed to prove the queries: each panel target's expression goes to Prometheus's HTTP API with
Grafana's interval variables replaced, as Grafana would send it.
"""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.factories import events
from tests.observe.test_metrics_e2e import publish_orders, settled
from tests.prometheus import PrometheusServer, require_prometheus_tool
from tests.workers import RECON, wait_for
from worker.app import configure

ROOT = Path(__file__).parents[2]
DASHBOARD = json.loads((ROOT / "deploy" / "grafana" / "recon.json").read_text())
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
#: Grafana's own variables, as it fills them for a dashboard showing the run's last minutes.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__range": "15m", "$__interval": "15s"}


def panels() -> list[dict[str, Any]]:
    return [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]


def queries() -> list[tuple[str, str]]:
    """(panel title and legend, expression) for every target of every panel."""
    found = []
    for panel in panels():
        for target in panel["targets"]:
            found.append((f"{panel['title']} [{target['legendFormat']}]", target["expr"]))
    return found


def as_sent(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a variable the test does not fill: {expr}"
    return expr


# --- the dashboard file ------------------------------------------------------------------------


def test_the_dashboard_is_a_grafana_dashboard_on_a_chosen_prometheus():
    assert DASHBOARD["uid"]
    assert DASHBOARD["title"]
    assert DASHBOARD["schemaVersion"] >= 36
    [variable] = DASHBOARD["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource", "datasource", "prometheus"
    )  # fmt: skip
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert grid["h"] > 0, panel["title"]
        assert panel["description"], panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert target["expr"].strip()
            assert target["refId"]


def test_the_readme_has_a_table_of_every_panel():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Dashboard", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| (?:\*\*)?([^|*]+?)(?:\*\*)? \|", section, re.MULTILINE))
    titles = {panel["title"] for panel in panels()}
    assert titles <= listed, f"README lacks the panels {sorted(titles - listed)}"
    assert listed - {"panel"} <= titles, (
        f"README lists panels not in the dashboard {listed - titles}"
    )


def test_the_grafana_provisioning_points_at_the_dashboard_and_prometheus():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    grafana = compose["services"]["grafana"]
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/recon.yml").read_text()
    )
    [folder] = [p["options"]["path"] for p in provider["providers"]]
    assert f"./deploy/grafana/recon.json:{folder}/recon.json:ro" in grafana["volumes"]
    sources = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    [source] = sources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]


# --- every query against a real Prometheus ----------------------------------------------------


def prometheus_config(metrics_dir: Path) -> dict[str, Any]:
    """deploy/prometheus/prometheus.yml with this run's paths and a 1 s rhythm."""
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(RULES)]
    [job] = config["scrape_configs"]
    [files] = job["file_sd_configs"]
    assert files["files"] == ["/run/recon/metrics/recon-*.json"]
    files["files"] = [str(metrics_dir / "recon-*.json")]
    files["refresh_interval"] = "1s"
    return config


@pytest.fixture
def prometheus(tmp_path):
    binary = require_prometheus_tool("prometheus")
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    server = PrometheusServer(binary, prometheus_config(metrics_dir), tmp_path / "prometheus")
    server.metrics_dir = metrics_dir  # type: ignore[attr-defined]
    yield server
    server.stop()


def has_data(server: PrometheusServer, expr: str) -> bool:
    """At least one series, and at least one value a panel can draw (not NaN)."""
    result = server.query(expr)
    return any(math.isfinite(float(series["value"][1])) for series in result)


def job_up(server: PrometheusServer, job: str) -> bool:
    return any(
        series["value"][1] == "1" for series in server.query(f'up{{job="{job}"}}')
    )  # fmt: skip


def test_every_panel_query_returns_data_from_a_real_worker_and_beat(
    prometheus, workers, sandbox, clean_db, tmp_path
):
    settings = {
        "RECON_METRICS_PORT": "0",
        "RECON_METRICS_DIR": str(prometheus.metrics_dir),
        # A small burst makes calls wait for the budget, and some hand their task back.
        "LOYALTY_RATE_LIMIT_PER_MINUTE": "120",
        "LOYALTY_RATE_LIMIT_BURST": "3",
        "RECON_MAX_ATTEMPTS": "2",
        # Beat also sends the nightly backfill every minute (the test does not wait for it).
        "RECON_BACKFILL_CRON": "* * * * *",
        "RECON_UNMATCHED_AFTER_SECONDS": "60",
    }
    worker = workers.start("w1", concurrency=2, **settings)
    beat_log = (tmp_path / "beat.log").open("wb")
    beat = subprocess.Popen(
        [RECON, "beat", "--schedule", str(tmp_path / "beat-schedule")],
        env={**workers.env, **settings},
        stdout=beat_log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: job_up(prometheus, "recon-worker"), 90, 0.5)
        wait_for(lambda: job_up(prometheus, "recon-beat"), 90, 0.5)

        # One order whose points update fails twice with 503: it gives up (two attempts), so
        # the next backfill re-drives it.
        sandbox.script("/v2/points/updateRedemption", {"status": 503}, {"status": 503})
        redemptions = publish_orders(workers, sandbox, "da", 81000, 1)
        wait_for(lambda: has_data(prometheus, 'recon_open_items{state="gave_up"} > 0'), 90)

        # Then the day's mix: a 429 (every worker pauses), a 521, an unknown coupon (510 and the
        # batch's 762), a points redeem (800), a malformed message and a duplicate.
        sandbox.script("/v2/coupon/redeem", {"status": 429, "retry_after": 2})
        sandbox.script("/v2/points/updateRedemption", {"code": 521})
        redemptions += publish_orders(workers, sandbox, "db", 82000, 12)
        mobile = "919500888888"
        sandbox.register_coupon(99101, mobile)
        bad_order = [
            events.coupon_redeemed("dd-bad", 99101, mobile),
            events.coupon_redeemed("dd-bad", 99102, mobile),  # never issued: 510
            events.transaction_completed("dd-bad", mobile),
        ]
        workers.publish(*(events.body(e) for e in bad_order))
        redemptions += 2
        workers.publish(events.body(events.redeem_requested("dd-redeem", mobile, points="5")))
        workers.publish(b"{not json", events.body(bad_order[0]))
        wait_for(lambda: settled(clean_db, redemptions, 1), timeout=240)
        # The backfill runs after the item gave up: sent now, as beat sends it (beat's own run
        # comes at the next minute, which would be most of this test's time to wait for).
        configure(workers.settings).send_task("recon.backfill")
        wait_for(lambda: has_data(prometheus, "recon_backfill_redriven_total"), 150, 1.0)
        wait_for(lambda: has_data(prometheus, "recon_backfill_runs_total"), 30, 1.0)

        # Every query of every panel, as Grafana sends it: each returns data. Counted series
        # reach Prometheus at the next scrape (1 s); a query still empty after 30 s is a panel
        # that would stay empty.
        for title, expr in queries():
            try:
                wait_for(lambda expr=expr: has_data(prometheus, as_sent(expr)), 30, 1.0)
            except AssertionError:
                pytest.fail(f"panel {title!r} shows no data: {as_sent(expr)}")

        # The alert rules are loaded and evaluate without error.
        groups = prometheus.api("rules", type="alert")["groups"]
        loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
        expected = {
            rule["alert"]
            for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"]
        }
        assert set(loaded) == expected
        wait_for(lambda: all(r["health"] == "ok" for r in _rules(prometheus).values()), 30)

        # And they watch these very processes: a worker killed without a chance to clean up
        # leaves its target file, Prometheus finds nobody at its port, ReconWorkerDown is
        # pending (it fires after its 2 minutes).
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
        wait_for(
            lambda: has_data(
                prometheus, 'ALERTS{alertname="ReconWorkerDown", alertstate="pending"}'
            ),
            60,
            1.0,
        )
    finally:
        beat.send_signal(signal.SIGTERM)
        beat.wait(timeout=30)
        beat_log.close()


def _rules(server: PrometheusServer) -> dict[str, dict[str, Any]]:
    groups = server.api("rules", type="alert")["groups"]
    return {rule["name"]: rule for group in groups for rule in group["rules"]}
