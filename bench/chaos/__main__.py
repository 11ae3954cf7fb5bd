"""`python -m bench.chaos` (`make chaos`): the chaos suite, phases (a) to (g), each bounded.

Not part of `make test`: it takes about 20 minutes and measures, it does not assert. It prints
every figure next to its target, writes `bench/results/chaos-latest.json`, and exits 1 when a
target was missed (2 when a phase could not run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import infra
from bench.chaos import cluster_phase, failover, phases, table

RESULTS = infra.ROOT / "bench" / "results"
LOG_DIR = RESULTS / "logs" / "chaos"

TARGETS = {
    "messages_lost": 0,
    "double_redemptions": 0,
    "items_not_terminal": 0,
    "recovery_s": phases.RECOVERY_TARGET_S,
    "manual_restarts": 0,
    "slowdown": 2.0,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chaos", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--phases", default="a,b,c,d,e,f,g", help="comma-separated subset of a-g")
    parser.add_argument("--kill-orders", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--mq-orders", type=int, default=100, help="orders per broker outage")
    parser.add_argument(
        "--outages", default="20,300", help="broker outages, seconds, comma-separated"
    )
    parser.add_argument("--pg-orders", type=int, default=200)
    parser.add_argument("--pg-down", type=float, default=5.0, help="seconds the cluster is down")
    parser.add_argument("--platform-orders", type=int, default=200)
    parser.add_argument("--client-timeout", type=float, default=2.0)
    parser.add_argument("--fuzz-orders", type=int, default=150)
    parser.add_argument("--garbage", type=int, default=10_000)
    parser.add_argument("--fuzz-timeout", type=float, default=240.0)
    parser.add_argument(
        "--fuzz-window", type=float, default=60.0, help="(e) seconds each run publishes over"
    )
    parser.add_argument("--ha-orders", type=int, default=150, help="(g) orders over the failover")
    parser.add_argument("--ha-detect", type=float, default=5.0, help="(g) seconds stop->promotion")
    parser.add_argument("--ha-lag-orders", type=int, default=80)
    parser.add_argument("--ha-hold", type=float, default=5.0, help="(g) seconds the standby lags")
    parser.add_argument("--ha-budget", type=int, default=120, help="(g) requests per minute")
    parser.add_argument("--cluster-orders", type=int, default=300, help="(f) orders per run")
    parser.add_argument("--cluster-pace", type=float, default=40.0, help="(f) seconds per run")
    parser.add_argument("--output", default=str(RESULTS / "chaos-latest.json"))
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other phases already in --output (each phase records its own revision)",
    )
    return parser.parse_args(argv)


def verdicts(figures: dict[str, Any]) -> dict[str, bool]:
    out = {}
    for name, target in TARGETS.items():
        if name not in figures:
            continue
        value = figures[name]
        if name in ("recovery_s", "slowdown"):
            out[name] = value is not None and value <= target
        else:
            out[name] = value == target
    return out


def show(label: str, figures: dict[str, Any]) -> None:
    print(f"  {label}", flush=True)
    marks = verdicts(figures)
    for name, target in TARGETS.items():
        if name not in figures:
            continue
        value = figures[name]
        shown = "did not settle before the phase's deadline" if value is None else value
        bound = f"<= {target}" if name in ("recovery_s", "slowdown") else f"= {target}"
        print(f"    {name:<22} {shown!s:<12} target {bound:<8} {'pass' if marks[name] else 'MISS'}")


def revision() -> str:
    try:
        out = subprocess.run(
            ["git", "log", "-1", "--format=%h %s"],
            cwd=infra.ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip()
    except Exception:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    infra.install_sigterm_as_interrupt()
    wanted = [p.strip() for p in args.phases.split(",") if p.strip()]
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "revision": revision(),
        "targets": TARGETS,
        "phases": {},
    }
    if args.merge and Path(args.output).exists():
        report["phases"] = json.loads(Path(args.output).read_text()).get("phases", {})
    runs: dict[str, tuple[str, Callable[[infra.SandboxProcess], dict[str, Any]]]] = {
        "a": (
            "kills",
            lambda s: phases.kills(s, LOG_DIR, orders=args.kill_orders, kills=args.kills),
        ),
        "b": (
            "broker_outage",
            lambda s: phases.broker(
                s,
                LOG_DIR,
                orders=args.mq_orders,
                outages=[float(x) for x in args.outages.split(",")],
            ),
        ),
        "c": (
            "postgres_restart",
            lambda s: phases.database(s, LOG_DIR, orders=args.pg_orders, down_s=args.pg_down),
        ),
        "d": (
            "platform_faults",
            lambda s: phases.platform(
                s, LOG_DIR, orders=args.platform_orders, timeout_s=args.client_timeout
            ),
        ),
        "e": (
            "hostile_messages",
            lambda s: phases.hostile_input(
                s,
                LOG_DIR,
                orders=args.fuzz_orders,
                garbage=args.garbage,
                timeout=args.fuzz_timeout,
                window_s=args.fuzz_window,
            ),
        ),
        "f": (
            "broker_node_lost",
            lambda s: cluster_phase.cluster(
                s, LOG_DIR, orders=args.cluster_orders, pace_s=args.cluster_pace
            ),
        ),
        "g": (
            "database_failover",
            lambda s: failover.failover(
                s,
                LOG_DIR,
                orders=args.ha_orders,
                detect_s=args.ha_detect,
                lag_orders=args.ha_lag_orders,
                hold_s=args.ha_hold,
                budget=args.ha_budget,
            ),
        ),
    }
    missed = broken = False
    sandbox = infra.SandboxProcess()
    try:
        for key in wanted:
            name, run = runs[key]
            print(f"({key}) {name} ...", flush=True)
            started = time.monotonic()
            stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            try:
                result = run(sandbox)
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                traceback.print_exc()
                result = {"error": f"{type(exc).__name__}: {exc}"}
                broken = True
            result["phase_s"] = round(time.monotonic() - started, 1)
            report["phases"][key] = {
                "name": name,
                "revision": report["revision"],
                "started_at": stamp,
                **result,
            }
            result = report["phases"][key]  # verdicts are recorded on the report itself
            for label, figures in [
                (r.get("label") or f"outage {r.get('outage_s')} s", r)
                for r in result.get("runs", [])
            ] or [(name, result)]:
                if "error" in figures:
                    print(f"  {name}: could not run: {figures['error']}")
                    continue
                show(label, figures)
                figures["verdicts"] = verdicts(figures)
                missed = missed or not all(figures["verdicts"].values())
            _write(args.output, report)
    finally:
        sandbox.stop()
        report["finished_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        _write(args.output, report)
    print()
    print(table.markdown(report))
    print(f"results: {args.output}")
    return 2 if broken else 1 if missed else 0


def _write(path: str, report: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=2, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
