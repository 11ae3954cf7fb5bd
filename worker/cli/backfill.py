"""`recon backfill`: re-drive open redemptions that have their bill, with a progress bar."""

from __future__ import annotations

import datetime as dt

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from models.session import engine_for, unit_of_work
from worker.audit.output import UTC_DATETIME, render
from worker.budget import limiter
from worker.ops import backfill as backfill_logic
from worker.reconcile import resources
from worker.settings import load_settings


@click.command()
@click.option("--since", type=UTC_DATETIME, help="Only redemptions created at or after this.")
@click.option("--until", type=UTC_DATETIME, help="Only redemptions created before this.")
@click.option("--kind", type=click.Choice(["coupon", "points"]), help="Only this kind.")
@click.option("--dry-run", is_flag=True, help="List what would be re-driven; send nothing.")
@click.option("--include-failed", is_flag=True, help="Also re-drive items that failed for good.")
@click.option("--chunk-size", default=500, show_default=True, type=click.IntRange(1, 10_000))
def backfill(
    since: dt.datetime | None,
    until: dt.datetime | None,
    kind: str | None,
    dry_run: bool,
    include_failed: bool,
    chunk_size: int,
) -> None:
    """Re-drive every redemption that has a bill but no success (never tried, gave_up).

    `unknown` is never re-driven (an operator decides: `recon resolve`); `failed` only with
    --include-failed. Calls stay within LOYALTY_RATE_LIMIT_PER_MINUTE, shared with the workers.

    Example: recon backfill --since 2026-11-20 --until 2026-11-21 --kind coupon --dry-run
    """
    if since and until and since >= until:
        raise click.BadParameter("--since must be before --until", param_hint="--since")
    options = backfill_logic.Options(
        since=since,
        until=until,
        kind=kind,
        dry_run=dry_run,
        include_failed=include_failed,
        chunk_size=chunk_size,
    )
    settings = load_settings()
    engine = engine_for(settings.database_url)
    with unit_of_work(engine) as session:
        total = backfill_logic.count_candidates(session, options)
    console = Console(stderr=True)
    if total == 0:
        click.echo("Nothing to re-drive.")
        return
    r = resources.build(settings, max_wait_seconds=60.0) if not dry_run else None
    columns = (TextColumn("[bold]backfill"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    # Backfill work takes its share of the budget and leaves live work ahead of it.
    with (
        limiter.tier(limiter.REDRIVE),
        Progress(*columns, console=console, transient=True) as progress,
    ):
        task = progress.add_task("backfill", total=total)
        summary = backfill_logic.run_backfill(
            engine,
            r.client if r else None,
            policy=r.policy if r else None,
            options=options,
            progress=lambda done: progress.advance(task, done),
        )
    if dry_run:
        rows = [vars(candidate) for candidate in summary.planned]
        fields = ("id", "kind", "redemption_id", "order_ref", "state", "attempts")
        render(rows, fields, "table", title=f"Would re-drive {len(rows)} redemption(s)")
        return
    click.echo(
        f"re-driven {summary.redriven} redemption(s) in {summary.orders} order(s): "
        f"{summary.succeeded} succeeded, {summary.failed} failed, {summary.still_open} still open"
    )


def register(group: click.Group) -> None:
    group.add_command(backfill)
