"""Scaling out, measured: the backlog phase's pipeline part (bench/backlog.py) with 1, 2 and 4
``recon worker`` processes and with ``-c 1`` against ``-c 2``; items/s and CPU per item each.

    python -m bench --phases scaling --scaling-orders 5000 --scaling-shapes 1x1,2x1,4x1,1x2
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import infra
from bench.backlog import pipeline, queue_backlog


def run(
    sandbox: infra.SandboxProcess,
    *,
    orders: int,
    shapes: list[tuple[int, int]],
    log_dir: Path,
    timeout: float,
    report: Callable[[dict[str, Any]], None] = lambda row: None,
) -> list[dict[str, Any]]:
    """The pipeline part of the backlog for each (workers, -c): items/s and CPU per item."""
    rows = []
    for workers, concurrency in shapes:
        backend, traffic = queue_backlog(sandbox, orders, ())
        try:
            row = pipeline(
                backend,
                sandbox,
                messages=len(traffic.events),
                items=traffic.items,
                workers=workers,
                concurrency=concurrency,
                log_dir=log_dir,
                timeout=timeout,
            )
        finally:
            backend.close()
        row["orders"] = orders
        row["max_peak_rss_mb"] = max(r["peak_rss_mb"] for r in row.pop("peak_rss"))
        report(row)
        rows.append(row)
    return rows


SCALING_FIELDS = ("workers", "concurrency", "items", "stored_s", "reconciled_s", "items_per_s",
                  "intake_cpu_ms_per_msg", "worker_cpu_ms_per_item", "max_peak_rss_mb")  # fmt: skip


def print_table(rows: list[dict[str, Any]]) -> None:
    table = Table(title="The backlog by worker processes and pool size")
    for name in SCALING_FIELDS:
        table.add_column(name, justify="right")
    for entry in rows:
        table.add_row(*(f"{entry[name]:,}" for name in SCALING_FIELDS))
    Console(width=140).print(table)
