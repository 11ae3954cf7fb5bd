"""The summary table of a chaos run, in Markdown (the README's and bench/README.md's table).

`python -m bench.chaos.table [bench/results/chaos-latest.json]` prints it again from the JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DEFAULT = Path(__file__).resolve().parent.parent / "results" / "chaos-latest.json"
COLUMNS = ("lost", "doubled", "not terminal", "recovery (s)", "manual restarts", "")


def _rows(report: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = []
    for key, phase in report.get("phases", {}).items():
        if "runs" in phase:
            for run in phase["runs"]:
                label = run.get("label") or f"broker down {run.get('outage_s')} s"
                rows.append((f"({key}) {label}", run))
        else:
            rows.append((f"({key}) {phase.get('name', key).replace('_', ' ')}", phase))
    return rows


def _cell(value: Any, ok: bool | None) -> str:
    shown = "—" if value is None else str(value)
    return f"**{shown}**" if ok is False else shown


def _latency(fig: dict[str, Any], run: str) -> str:
    values = fig.get("latency_per_order_s", {}).get(run, {})
    return f"{values.get('p50')}/{values.get('p95')}"


def markdown(report: dict[str, Any]) -> str:
    head = "| phase | " + " | ".join(COLUMNS) + " |"
    lines = [head, "|---" * (len(COLUMNS) + 1) + "|"]
    lines.append("| target | 0 | 0 | 0 | ≤ 60 | 0 | valid orders ≤ 2x slower under garbage |")
    for label, fig in _rows(report):
        if "error" in fig:
            lines.append(f"| {label} | could not run: {fig['error']} |||||")
            continue
        marks = fig.get("verdicts", {})
        extra = ""
        if "slowdown" in fig:
            extra = (
                f"{_cell(fig['slowdown'], marks.get('slowdown'))}x slower "
                f"({fig.get('with_garbage_s')} s vs {fig.get('baseline_s')} s to settle); "
                f"latency per order p50/p95 {_latency(fig, 'with_garbage')} s vs "
                f"{_latency(fig, 'baseline')} s; "
                f"{fig.get('published_total'):,} published = {fig.get('inbox_rows'):,} inbox "
                f"rows + {fig.get('dead_lettered'):,} dead letters"
                f" + {fig.get('still_queued', 0):,} still queued"
            )
        elif "kills" in fig:
            extra = (
                f"{len(fig['kills'])} kills, {fig.get('kills_during_redeem_call')} during a "
                f"redeem call; {fig.get('sandbox_redeem_effects')} redeems applied for "
                f"{fig.get('sandbox_redeem_requests_sent')} sent"
            )
        elif "faults" in fig:
            extra = ", ".join(f"{k}={v}" for k, v in fig["faults"].items() if k != "seed")
        elif "promoted_s" in fig:
            extra = f"standby promoted {fig['promoted_s']} s after the stop"
            for key, kind in (
                ("lagging_standby", "async"),
                ("lagging_synchronous_standby", "sync"),
            ):
                lag = fig.get(key, {})
                extra += (
                    f"; {kind} standby {lag.get('held_s')} s behind, primary killed: "
                    f"{lag.get('messages_lost')} lost, {lag.get('double_redemptions')} doubled, "
                    f"{lag.get('over_budget_in_one_window')} requests over the budget"
                )
        elif "down_s" in fig:
            extra = f"down {fig['down_s']} s"
        lines.append(
            f"| {label} | {_cell(fig.get('messages_lost'), marks.get('messages_lost'))} "
            f"| {_cell(fig.get('double_redemptions'), marks.get('double_redemptions'))} "
            f"| {_cell(fig.get('items_not_terminal'), marks.get('items_not_terminal'))} "
            f"of {fig.get('items')} "
            f"| {_cell(fig.get('recovery_s'), marks.get('recovery_s'))} "
            f"| {_cell(fig.get('manual_restarts'), marks.get('manual_restarts'))} "
            f"| {extra} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DEFAULT
    report = json.loads(path.read_text())
    print(f"revision {report.get('revision')}, started {report.get('started_at')}\n")
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
