"""`python -m bench` (`make bench`): the pipeline, the floor, the rate limit, then audit lookups.

See bench/README.md for what is measured and how to read it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from bench import floor, infra, pipeline, ratelimit_phase, report


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=5000, help="orders in phase 1 and the floor")
    parser.add_argument("--coupons-per-bill", "-k", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="recon worker processes, phase 1")
    parser.add_argument("--concurrency", type=int, default=1, help="pool size of each worker")
    parser.add_argument("--floor-threads", default="1,2", help="thread counts tried for the floor")
    parser.add_argument("--limit", type=int, default=6000, help="rate limit per minute, phase 2")
    parser.add_argument("--window", type=float, default=60.0, help="phase 2 window, seconds")
    parser.add_argument("--rl-orders", type=int, default=5000, help="orders published, phase 2")
    parser.add_argument("--rl-workers", type=int, default=4)
    parser.add_argument("--rl-concurrency", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300.0, help="phase 1 wait, seconds")
    parser.add_argument(
        "--phases", default="pipeline,floor,ratelimit,audit", help="comma-separated subset"
    )
    parser.add_argument("--audit-rows", type=int, default=None, help="rows for audit_lookups")
    return parser.parse_args(argv)


def environment() -> dict[str, Any]:
    return {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host_cpus": os.cpu_count(),
        "host_memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "note": "PostgreSQL, RabbitMQ, the sandbox, the workers and the benchmark share the host",
    }


def run_audit_lookups(rows: int | None) -> None:
    if importlib.util.find_spec("bench.audit_lookups") is None:
        print("\n(audit lookups: bench/audit_lookups.py is not there yet)")
        return
    print("\n== audit lookups (bench/audit_lookups.py) ==", flush=True)
    from bench import audit_lookups

    saved = sys.argv
    sys.argv = ["python -m bench.audit_lookups"] + ([] if rows is None else ["--rows", str(rows)])
    try:
        audit_lookups.main()
    finally:
        sys.argv = saved


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    phases = {p.strip() for p in args.phases.split(",") if p.strip()}
    infra.install_sigterm_as_interrupt()
    log_dir = report.RESULTS / "logs"
    results: dict[str, Any] = {
        "environment": environment(),
        "setup": {
            "phase1": f"{args.workers} recon worker process(es), each -c {args.concurrency} "
            f"(prefork), {args.orders} orders x ({args.coupons_per_bill} coupons + 1 points)",
            "phase2": f"{args.rl_workers} recon worker process(es), each -c {args.rl_concurrency}"
            f", limit {args.limit}/min at the sandbox and in LOYALTY_RATE_LIMIT_PER_MINUTE",
            "sandbox": "separate process (python -m sandbox), no faults",
        },
    }
    started = time.monotonic()
    print(
        f"recon benchmark on {os.cpu_count()} CPU(s); PostgreSQL, RabbitMQ, the sandbox and the "
        "workers share them. Worker logs: bench/results/logs/",
        flush=True,
    )
    sandbox = infra.SandboxProcess()
    exit_code = 0
    try:
        if "pipeline" in phases:
            print("\n== phase 1: the pipeline ==", flush=True)
            results["pipeline"] = pipeline.run(
                sandbox,
                orders=args.orders,
                coupons_per_bill=args.coupons_per_bill,
                workers=args.workers,
                concurrency=args.concurrency,
                log_dir=log_dir,
                timeout=args.timeout,
            )
            p = results["pipeline"]
            print(
                f"  {p['items_succeeded']:,} items in {p['span_s']:.1f} s = "
                f"{p['items_per_s']:,.0f} items/s; latency p50 {p['latency_s']['p50']:.2f} s, "
                f"p95 {p['latency_s']['p95']:.2f} s; CPU {p['cpu']}",
                flush=True,
            )
        if "floor" in phases:
            print("\n== the floor: a bare requests loop ==", flush=True)
            results["floor"] = floor.run(
                sandbox,
                orders=args.orders,
                coupons_per_bill=args.coupons_per_bill,
                threads=[int(n) for n in args.floor_threads.split(",")],
            )
            for run in results["floor"]["runs"]:
                print(
                    f"  {run['threads']} thread(s): {run['calls']:,} calls in "
                    f"{run['seconds']:.1f} s = {run['calls_per_s']:,.0f} calls/s, "
                    f"{run['items_per_s']:,.0f} items/s",
                    flush=True,
                )
        if "ratelimit" in phases:
            print("\n== phase 2: the shared rate limit ==", flush=True)
            results["ratelimit"] = ratelimit_phase.run(
                sandbox,
                limit_per_minute=args.limit,
                window_s=args.window,
                orders=args.rl_orders,
                coupons_per_bill=args.coupons_per_bill,
                workers=args.rl_workers,
                concurrency=args.rl_concurrency,
                log_dir=log_dir,
            )
            r = results["ratelimit"]
            print(
                f"  accepted {r['accepted_in_window']:,} in {r['window_s']:.1f} s "
                f"({r['share_of_limit']:.1%} of the limit), 429s: {r['throttled_429']}",
                flush=True,
            )
    except KeyboardInterrupt:
        print("\ninterrupted: cleaning up", file=sys.stderr)
        exit_code = 130
    finally:
        sandbox.stop()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["verdicts"] = report.verdicts(results)
    print()
    report.print_tables(results)
    path = report.write_json(results)
    print(f"results: {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    print(f"benchmark phases took {results['elapsed_s']:.0f} s")
    if exit_code == 0 and "audit" in phases:
        try:
            run_audit_lookups(args.audit_rows)
        except KeyboardInterrupt:
            exit_code = 130
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
