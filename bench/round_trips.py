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
    totals: dict[str, dict[str, float]] = {}
    for labels, value in _samples(name, "recon_db_round_trips"):
        role = totals.setdefault(labels["role"], {})
        role[labels["trip"]] = role.get(labels["trip"], 0.0) + value
    return totals


def total(name: str, metric: str) -> float:
    """A counter's total over every worker called ``name`` (e.g. recon_ratelimit_deferrals)."""
    return sum(value for _, value in _samples(name, metric))


def _samples(name: str, metric: str) -> list[tuple[dict[str, str], float]]:
    from prometheus_client.multiprocess import MultiProcessCollector

    found = []
    for sub in sorted((ROOT / name).glob("recon-metrics-*")):
        for family in MultiProcessCollector(None, path=str(sub)).collect():
            if family.name != metric:
                continue
            found += [(s.labels, s.value) for s in family.samples if s.name.endswith("_total")]
    return found


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
