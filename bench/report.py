"""The final table (figure, target, PASS/MISS) and the JSON file with everything measured."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import backlog

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
RSS_LIMIT_MB = 150.0
FLOOR_SHARE = 0.40
LIMIT_SHARE = 0.95


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure: name, value, target, and PASS / MISS (or "-" when there is none)."""
    rows: list[dict[str, Any]] = []

    def row(name: str, value: str, target: str, ok: bool | None) -> None:
        verdict = "-" if ok is None else ("PASS" if ok else "MISS")
        rows.append({"figure": name, "value": value, "target": target, "verdict": verdict})

    pipe = results.get("pipeline")
    floor = results.get("floor")
    limit = results.get("ratelimit")
    if pipe:
        k = pipe["coupons_per_bill"]
        row(
            "items reconciled (succeeded / published)",
            f"{pipe['items_succeeded']:,} / {pipe['items']:,}",
            "all",
            pipe["items_succeeded"] == pipe["items"] and not pipe["timed_out"],
        )
        row(
            "redemptions never matched to their bill",
            f"{pipe.get('unmatched', 0):,}",
            "0",
            pipe.get("unmatched", 0) == 0,
        )
        row(
            "reconciled items per second (pipeline)",
            f"{pipe['items_per_s']:,.0f}",
            "",
            None,
        )
        row("  orders per second", f"{pipe['orders_per_s']:,.0f}", "", None)
        coupon, coupon_items = pipe["api_coupon_calls"], pipe["coupon_items_succeeded"]
        row(
            "API calls per coupon item",
            f"{pipe['api_calls_per_coupon_item']:.4f} ({coupon:,} / {coupon_items:,})",
            f"= 1/{k} = {1 / k:.4f}",
            Fraction(coupon, max(coupon_items, 1)) == Fraction(1, k),
        )
        bills = pipe["bills_with_coupons_reconciled"]
        row(
            "  coupon calls per (customer, bill)",
            f"{pipe['api_coupon_calls_per_bill']:.4f} ({coupon:,} / {bills:,})",
            "= 1",
            coupon == bills,
        )
        expected = Fraction(2, k + 1)  # one coupon call + one points call per k + 1 items
        row(
            "API calls per reconciled item (all kinds)",
            f"{pipe['api_calls_per_item']:.4f} "
            f"({pipe['api_calls']:,} / {pipe['items_succeeded']:,})",
            f"= 2/{k + 1} = {float(expected):.4f}",
            Fraction(pipe["api_calls"], max(pipe["items_succeeded"], 1)) == expected,
        )
        lat = pipe["latency_s"]
        row("latency publish -> outcome p50 (burst)", f"{lat['p50']:.2f} s", "", None)
        row("latency publish -> outcome p95 (burst)", f"{lat['p95']:.2f} s", "", None)
        paced = pipe.get("paced")
        if paced:
            row(
                f"  paced at {paced['publish_orders_per_s']:.0f} orders/s: p50",
                f"{paced['latency_s']['p50']:.2f} s",
                "",
                None,
            )
            row(
                f"  paced at {paced['publish_orders_per_s']:.0f} orders/s: p95",
                f"{paced['latency_s']['p95']:.2f} s",
                "",
                None,
            )
        if paced and "api_coupon_calls_per_bill" in paced:
            row(
                "  coupon calls per (customer, bill), paced",
                f"{paced['api_coupon_calls_per_bill']:.4f}",
                "= 1",
                paced["api_coupon_calls_per_bill"] == 1,
            )
        row(
            "429 answers in phase 1 (no sandbox limit)",
            str(pipe["api_by_status"].get("429", 0)),
            "0",
            pipe["api_by_status"].get("429", 0) == 0,
        )
    if floor:
        row(
            f"floor: bare requests loop items/s ({floor['best_threads']} thread(s))",
            f"{floor['items_per_s']:,.0f}",
            "",
            None,
        )
    if pipe and floor:
        ratio = pipe["items_per_s"] / floor["items_per_s"]
        results["pipeline_over_floor"] = round(ratio, 4)
        row("throughput pipeline / floor", f"{ratio:.1%}", f">= {FLOOR_SHARE:.0%}", ratio >= 0.4)
    peaks = [p["peak_rss_mb"] for p in (pipe, limit) if p]
    if peaks:
        worst = max(peaks)
        row(
            "peak RSS of any worker process",
            f"{worst:.1f} MB",
            f"< {RSS_LIMIT_MB:.0f} MB",
            worst < RSS_LIMIT_MB,
        )
    if limit:
        row(
            f"share of the limit used ({limit['limit_per_minute']}/min, {limit['window_s']:.0f} s)",
            f"{limit['share_of_limit']:.1%} ({limit['accepted_in_window']:,} / "
            f"{limit['allowed_in_window']:,.0f})",
            f">= {LIMIT_SHARE:.0%}",
            limit["share_of_limit"] >= LIMIT_SHARE,
        )
        row(
            f"  work still queued when the window closed ({limit['mode']})",
            "yes" if limit["work_left_at_window_end"] else "no",
            "yes",
            bool(limit["work_left_at_window_end"]),
        )
        row(
            "429 answers in the rate-limit phase",
            str(limit["throttled_429"]),
            "0",
            limit["throttled_429"] == 0,
        )
    _window_rows(results, row)
    if results.get("backlog"):
        backlog.verdict_rows(results["backlog"], row)
    intake = results.get("intake")
    if intake:
        for check, (ms, shape) in intake["slowest_at_256_kib"].items():
            row(
                f"intake contract at 256 KiB, {check} (slowest shape: {shape})",
                f"{ms:.1f} ms",
                f"< {intake['target_ms']:.0f} ms",
                ms < intake["target_ms"],
            )
    return rows


#: Issue 10's targets.
BURST_OVER_FLOOR_S = 5.0
PAIRS_OVER_FLOOR = 0.10
BACKLOG_SHARE = 0.99
LIVE_P95_S = 2.0


def _window_rows(results: dict[str, Any], row: Any) -> None:
    """The figures of spending the budget the way the platform counts it (bench/window.py)."""
    win = results.get("window") or {}
    burst = win.get("burst")
    if burst:
        row(
            f"burst below the budget: {burst['api_calls']} calls at "
            f"{burst['limit_per_minute']}/min, first publish -> last outcome",
            f"{burst['seconds_first_publish_to_last_outcome']:.1f} s (floor {burst['floor_s']} s,"
            f" 429s {burst['throttled_429']})",
            f"<= floor + {BURST_OVER_FLOOR_S:.0f} s",
            burst["over_floor_s"] <= BURST_OVER_FLOOR_S and burst["throttled_429"] == 0,
        )
    pairs = win.get("pairs")
    if pairs:
        row(
            f"dependent pairs: {pairs['api_calls']} calls at {pairs['limit_per_minute']}/min",
            f"{pairs['seconds_first_publish_to_last_outcome']:.1f} s (floor {pairs['floor_s']} s,"
            f" 429s {pairs['throttled_429']})",
            f"<= floor + {PAIRS_OVER_FLOOR:.0%}",
            pairs["over_floor_share"] is not None
            and pairs["over_floor_share"] <= PAIRS_OVER_FLOOR
            and pairs["throttled_429"] == 0,
        )
    limit = results.get("ratelimit")
    if limit:
        # Issue 14: the same backlog at every limit of --rl-limits, headline first.
        for run in (limit, *limit.get("by_limit", {}).values()):
            steady = run.get("steady_60s_min_share")
            share = min(run["share_of_limit"], run.get("sliding_60s_min_share", 1.0))
            row(
                f"long backlog at {run['limit_per_minute']:,}/min: share of the budget in every "
                f"60 s window after the ring's first turn ({run.get('steady_60s_windows', 0)} "
                "windows), 429s",
                f"{'-' if steady is None else f'{steady:.1%}'}, {run['throttled_429']} x 429; "
                f"refused a slot {run.get('refused_in_window', 0):,} (peak "
                f"{run.get('peak_refused_in_one_second', 0):,}/s)"
                + ("" if run["work_left_at_window_end"] else "; the backlog ran out"),
                f">= {BACKLOG_SHARE:.0%}, 0 x 429",
                steady is not None and steady >= BACKLOG_SHARE and run["throttled_429"] == 0,
            )
            row(
                "  every 60 s window from 5 s after the first call (the first minute's burst "
                "included)",
                f"{share:.1%}",
                "",
                None,
            )
    throttle = win.get("throttle")
    if throttle:
        row(
            f"429 burst ({throttle['throttle_s']} s): further 429s after the first",
            f"{throttle['further_429_after_first']} (in flight: at most "
            f"{throttle['other_requests_possibly_in_flight']}); gave_up/unknown "
            f"{throttle['items_gave_up_or_unknown']}",
            "0 beyond those in flight",
            throttle["further_429_after_first"] <= throttle["other_requests_possibly_in_flight"]
            and throttle["items_gave_up_or_unknown"] == 0,
        )
    back = win.get("backfill")
    if back:
        p95 = back["live"]["latency_s"]["p95"]
        row(
            f"live latency during a backfill of {back['backfill_items']:,} items "
            f"({back['limit_per_minute']}/min): p95",
            f"{p95:.2f} s (p50 {back['live']['latency_s']['p50']:.2f} s, "
            f"{back['live_orders_published']} orders)",
            f"< {LIVE_P95_S:.0f} s",
            p95 < LIVE_P95_S,
        )
        split = back["split_while_backfill_ran"]
        row(
            "  budget split while the backfill ran (calls/min)",
            f"live {split['live_calls_per_min']:.0f}, backfill "
            f"{split['backfill_calls_per_min']:.0f} (backfill took {back['backfill_seconds']:.0f}"
            " s)",
            "",
            None,
        )
    pipe = results.get("pipeline")
    if pipe:
        cpu = pipe["cpu"]
        worker_s = cpu["worker_main_processes_s"] + cpu["worker_pool_processes_s"]
        items = max(pipe["items_succeeded"], 1)
        servers_s = cpu.get("postgres_s", 0.0) + cpu.get("rabbitmq_s", 0.0)
        row(
            "cost: worker CPU-seconds per reconciled item (pipeline)",
            f"{1000 * worker_s / items:.1f} ms (+ PostgreSQL and RabbitMQ "
            f"{1000 * servers_s / items:.1f} ms, shared servers)",
            "",
            None,
        )
        k = pipe["coupons_per_bill"]
        budget_items_per_s = 1000 / 60 * (k + 1) / 2  # default budget, 2 calls per k + 1 items
        headroom = pipe["items_per_s"] / budget_items_per_s
        results["headroom"] = round(headroom, 2)
        row(
            "headroom: items/s sustained / items/s the default budget allows",
            f"{headroom:.1f}x ({pipe['items_per_s']:,.0f} / {budget_items_per_s:.1f})",
            "",
            None,
        )
    if back:
        row(
            "  worker CPU per item while rate-limited (backfill + live)",
            f"{back['worker_cpu_ms_per_item']:.1f} ms",
            "",
            None,
        )


def print_tables(results: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(width=120)
    for phase in ("pipeline", "ratelimit"):
        memory = (results.get(phase) or {}).get("memory")
        if memory:
            table = Table(title=f"Peak RSS per worker process ({phase})")
            names = ("role", "pid", "first_rss_mb", "peak_rss_mb", "last_rss_mb")
            for name in names:
                table.add_column(name, justify="right" if name != "role" else "left")
            for entry in memory:
                table.add_row(
                    entry["role"],
                    str(entry["pid"]),
                    *(f"{entry.get(name, float('nan')):.1f}" for name in names[2:]),
                )
            console.print(table)
    table = Table(title="Benchmark figures")
    for name in ("figure", "value", "target", "verdict"):
        table.add_column(name, justify="left" if name in ("figure", "value") else "center")
    for entry in results["verdicts"]:
        style = {"PASS": "green", "MISS": "bold red"}.get(entry["verdict"])
        verdict = f"[{style}]{entry['verdict']}[/]" if style else entry["verdict"]
        table.add_row(entry["figure"], entry["value"], entry["target"], verdict)
    console.print(table)


def write_json(results: dict[str, Any], path: Path | None = None) -> Path:
    path = path or RESULTS / "latest.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return path
