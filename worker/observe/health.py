"""`python -m worker.observe.health`: the container image's health check.

Healthy when every `recon worker` or `recon beat` announcing itself in the metrics directory
(``RECON_METRICS_DIR``; see ``worker/observe/discovery.py``) answers on /metrics, and at least one
does. It imports nothing heavy (no Celery, no SQLAlchemy), so Docker can run it every few seconds.
Roles that serve no metrics (`recon web`, `recon sandbox`) have their own checks in compose.yaml.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request

from worker.observe import discovery

TIMEOUT_SECONDS = 5.0


def check(metrics_dir: str) -> str | None:
    """None when healthy, else one line saying what is wrong."""
    root = discovery.directory_for(metrics_dir)
    # A file left by a process that was killed names a dead port: not a running process's health.
    files = discovery.live_target_files(root)
    if not files:
        return f"no recon worker or beat announces /metrics in {root} (is RECON_METRICS_PORT set?)"
    for path in files:
        for group in json.loads(path.read_text()):
            for target in group["targets"]:
                url = f"http://{target}/metrics"
                try:
                    with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as answer:
                        answer.read()
                except OSError as exc:
                    return f"{url} ({path.name}) does not answer: {exc}"
    return None


def main() -> int:
    problem = check(os.environ.get("RECON_METRICS_DIR", ""))
    if problem:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
