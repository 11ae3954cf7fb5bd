"""Reading what the product exports, as Prometheus would: the text format, parsed by the
library; and a real Prometheus server for the tests that need one (the dashboard's)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Collection
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

# What a label may say, written down here rather than imported from the code under test.
VOCABULARY: dict[str, set[str]] = {
    "kind": {"coupon", "points", "points_redeem", "vendor", "other"},
    "status": {"succeeded", "failed", "retrying", "gave_up", "unknown", "skipped", "other"},
    "endpoint": {
        "coupon_update", "points_update", "points_redeem", "vendor_update", "oauth_token", "other",
    },
    "http_class": {"none", "1xx", "2xx", "3xx", "4xx", "5xx", "other"},
    "result": {
        "succeeded", "partial", "failed", "answered", "rejected", "transient", "ambiguous",
        "rate_limited", "protocol_error", "unauthorized", "error", "other",
    },
    "fate": {"stored", "duplicate", "rejected", "dead_lettered", "requeued", "other"},
    "work": {"live", "redriven", "order", "redeem_request", "other"},
    "item": {"redemption", "redeem_request"},
    "state": {"pending", "in_flight", "retrying", "gave_up"},
    "queue": {"events", "reconcile", "redrive", "dead"},
    "role": {"intake", "tasks"},
    "trip": {"statement", "begin", "commit", "rollback", "ping"},
}  # fmt: skip
#: A platform code the product knows (3 to 4 digits), or one of the two catch-alls.
CODE = re.compile(r"^(none|other|\d{3,4})$")


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def scrape(port: int, host: str = "127.0.0.1") -> Samples:
    answer = requests.get(f"http://{host}:{port}/metrics", timeout=10)
    answer.raise_for_status()
    return parse(answer.text)


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def by_labels(samples: Samples, name: str, *keys: str) -> Counter[tuple[str, ...]]:
    counts: Counter[tuple[str, ...]] = Counter()
    for (n, ls), value in samples.items():
        if n == name and value:
            labels = dict(ls)
            counts[tuple(labels[k] for k in keys)] += int(value)
    return counts


def unbounded_labels(samples: Samples, forbidden: Collection[str] = ()) -> list[Any]:
    """Every (metric, label, value) of ours outside the vocabulary, or equal to an id."""
    problems = []
    for (name, labels), _value in samples.items():
        if not name.startswith("recon_"):
            continue
        for label, value in labels:
            if value in forbidden:
                problems.append((name, label, value, "is an id from the data"))
            elif label == "code":
                if not CODE.match(value):
                    problems.append((name, label, value, "not a known code"))
            elif label == "le":
                float(value)  # a histogram bucket bound
            elif value not in VOCABULARY.get(label, set()):
                problems.append((name, label, value, "not in the vocabulary"))
    return problems


# --- a real Prometheus server (Debian's, unpacked into the venv by scripts/install-prometheus) --


def prometheus_tool(name: str) -> str | None:
    """``promtool`` or ``prometheus``: beside the test interpreter (where `make test` puts them),
    else on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def require_prometheus_tool(name: str) -> str:
    """The tool's path; a skip naming how to install it, or a failure under CI."""
    tool = prometheus_tool(name)
    if tool is None:
        message = f"{name} is not installed (make test installs it: scripts/install-prometheus)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return tool


class PrometheusServer:
    """A Prometheus process on a free loopback port with its own storage, stopped by ``stop``."""

    def __init__(self, binary: str, config: dict[str, Any], workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.config_file = workdir / "prometheus.yml"
        self.config_file.write_text(yaml.safe_dump(config))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.log = workdir / "prometheus.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.config_file}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"Prometheus did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/-/ready", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def api(self, path: str, **params: str) -> Any:
        answer = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        body = answer.json()
        assert body.get("status") == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at this moment: the series it returns (empty: no data)."""
        data = self.api("query", query=expr)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
