"""Database round trips of the workers (issue 14), read from their metric files.

Each `recon worker` of the benchmark serves metrics with its multiprocess directory under
``directory(name)``; its processes count their round trips there
(``worker/observe/round_trips.py``).
Read them while the workers run: a worker removes its directory when it stops.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

ROOT = Path(tempfile.gettempdir()) / "recon-bench-metrics"


def directory(name: str) -> Path:
    """A fresh folder for the workers called ``name``."""
    path = ROOT / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def read(name: str) -> dict[str, dict[str, float]]:
    """{role: {kind: round trips so far}} over every worker called ``name``."""
    from prometheus_client.multiprocess import MultiProcessCollector

    totals: dict[str, dict[str, float]] = {}
    for sub in sorted((ROOT / name).glob("recon-metrics-*")):
        for metric in MultiProcessCollector(None, path=str(sub)).collect():
            if metric.name != "recon_db_round_trips":
                continue
            for sample in metric.samples:
                if not sample.name.endswith("_total"):
                    continue
                role = totals.setdefault(sample.labels["role"], {})
                kind = sample.labels["kind"]
                role[kind] = role.get(kind, 0.0) + sample.value
    return totals


def spent(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]) -> dict:
    """Round trips between two readings, by role and kind, with each role's total."""
    out: dict[str, dict[str, float]] = {}
    for role, kinds in after.items():
        was = before.get(role, {})
        row = {kind: n - was.get(kind, 0.0) for kind, n in kinds.items()}
        row["total"] = sum(row.values())
        out[role] = row
    return out


def per_unit(spent_: dict[str, dict[str, float]], orders: int, items: int) -> dict[str, dict]:
    """Each role's round trips per order and per item."""
    return {
        role: {
            "per_order": round(row["total"] / max(orders, 1), 2),
            "per_item": round(row["total"] / max(items, 1), 2),
            **{kind: int(n) for kind, n in row.items()},
        }
        for role, row in spent_.items()
    }
