"""Finding a worker's /metrics when RECON_METRICS_PORT=0 let it pick any port: the start-up banner
says where, and a Prometheus file_sd target file in RECON_METRICS_DIR says the same to Prometheus.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.prometheus import scrape, total
from tests.workers import RECON, wait_for

pytestmark = pytest.mark.e2e


def announced(metrics_dir: Path, role: str) -> dict[str, str]:
    """Target file name -> the one target it names."""
    found = {}
    for path in metrics_dir.glob(f"recon-{role}-*.json"):
        [group] = json.loads(path.read_text())
        assert group["labels"] == {"job": f"recon-{role}"}
        [found[path.name]] = group["targets"]
    return found


def test_a_worker_on_any_port_says_where_in_its_banner_and_in_its_target_file(workers, tmp_path):
    metrics_dir = tmp_path / "metrics"
    settings = {"RECON_METRICS_PORT": "0", "RECON_METRICS_DIR": str(metrics_dir)}
    first = workers.start("w1", **settings)
    [(name, target)] = wait_for(lambda: list(announced(metrics_dir, "worker").items()), 60)
    assert name == f"recon-worker-{first.pid}.json"
    host, port = target.split(":")
    assert host == "127.0.0.1"
    assert total(scrape(int(port)), "recon_db_gauges_up") == 1
    banner = wait_for(lambda: "[metrics]" in workers.log_of("w1") and workers.log_of("w1"), 60)
    assert f".> http://127.0.0.1:{port}/metrics" in banner
    assert f".> target file: {metrics_dir / name}" in banner

    # Killed without a chance to clean up, its file stays: Prometheus sees it down (the
    # ReconWorkerDown alert). The next worker to start on the host removes it.
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    assert name in announced(metrics_dir, "worker")
    second = workers.start("w2", **settings)
    wait_for(lambda: list(announced(metrics_dir, "worker")) == [f"recon-worker-{second.pid}.json"])

    # A worker stopped as systemd and compose stop it (SIGTERM, once it is up) removes its file.
    wait_for(lambda: " ready." in workers.log_of("w2"), 60)
    workers.stop()
    assert announced(metrics_dir, "worker") == {}


def test_beat_says_where_it_serves_in_its_banner_and_target_file(workers, tmp_path):
    metrics_dir = tmp_path / "metrics"
    log_path = tmp_path / "beat.log"
    with log_path.open("wb") as log:
        beat = subprocess.Popen(
            [RECON, "beat", "--schedule", str(tmp_path / "beat-schedule")],
            env={**workers.env, "RECON_METRICS_PORT": "0", "RECON_METRICS_DIR": str(metrics_dir)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        [(name, target)] = wait_for(lambda: list(announced(metrics_dir, "beat").items()), 60)
        assert name == f"recon-beat-{beat.pid}.json"
        banner = wait_for(lambda: "metrics ->" in log_path.read_text() and log_path.read_text())
        assert f". metrics -> http://{target}/metrics" in banner
        assert total(scrape(int(target.split(":")[1])), "recon_db_gauges_up") == 1
    finally:
        beat.send_signal(signal.SIGTERM)
        beat.wait(timeout=30)
    assert announced(metrics_dir, "beat") == {}
