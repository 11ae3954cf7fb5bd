"""`python -m bench.intake_check`: how long the intake's contract takes on hostile bodies.

For each shape of ``bench/intake_shapes.py`` at 16, 64 and 256 KiB: the checks made before
parsing (``check_bounds``: size and nesting depth, on the raw bytes) and the whole contract as the
intake runs it on each message (``parse_event``: those checks, the JSON parser, the walk for
unstorable strings, validation). The time is this thread's CPU time (the checks do no I/O, so on an
idle machine it is the wall time, and on a shared one other processes do not inflate it), median
of ``--runs`` runs, with the garbage collector on as in the worker. Target: under 50 ms at 256 KiB
for each. No services needed.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.intake_shapes import KIB, SHAPES
from worker.intake.contract import parse_event
from worker.intake.wire import ContractError, check_bounds

SIZES_KIB = (16, 64, 256)
TARGET_MS = 50.0


def _quietly(check: Callable[[bytes], object]) -> Callable[[bytes], None]:
    def run(body: bytes) -> None:
        with contextlib.suppress(ContractError):
            check(body)

    return run


CHECKS = {"before parsing": _quietly(check_bounds), "whole contract": _quietly(parse_event)}


def _median_ms(check: Callable[[bytes], None], body: bytes, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.thread_time()
        check(body)
        times.append((time.thread_time() - started) * 1000)
    return statistics.median(times)


def run(runs: int = 7) -> dict[str, Any]:
    """Milliseconds per shape, check and size (KiB), and the slowest of each check at 256 KiB."""
    table: dict[str, dict[str, dict[int, float]]] = {}
    for shape, build in SHAPES.items():
        bodies = {size: build(size * KIB) for size in SIZES_KIB}
        table[shape] = {
            name: {size: _median_ms(check, bodies[size], runs) for size in SIZES_KIB}
            for name, check in CHECKS.items()
        }
    slowest = {
        name: max((ms[name][SIZES_KIB[-1]], shape) for shape, ms in table.items())
        for name in CHECKS
    }
    return {"runs": runs, "target_ms": TARGET_MS, "ms": table, "slowest_at_256_kib": slowest}


def print_table(result: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(width=140)
    table = Table(
        title=f"Intake contract on hostile bodies (ms of CPU, median of {result['runs']} runs; "
        f"target < {result['target_ms']:.0f} ms at 256 KiB)"
    )
    table.add_column("shape")
    for name in CHECKS:
        for size in SIZES_KIB:
            table.add_column(f"{name}\n{size} KiB", justify="right")
    table.add_column("verdict", justify="center")
    for shape, ms in result["ms"].items():
        worst = max(ms[name][SIZES_KIB[-1]] for name in CHECKS)
        verdict = "[green]PASS[/]" if worst < result["target_ms"] else "[bold red]MISS[/]"
        cells = [f"{ms[name][size]:.2f}" for name in CHECKS for size in SIZES_KIB]
        table.add_row(shape, *cells, verdict)
    console.print(table)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python -m bench.intake_check", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--runs", type=int, default=7, help="runs per shape, check and size")
    args = parser.parse_args(argv)
    result = run(runs=args.runs)
    print_table(result)
    return result


if __name__ == "__main__":
    main()
