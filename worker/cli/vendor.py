"""`recon vendor push DIR`: check vendor redemption configurations and send those that changed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import click
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from models.session import engine_for, unit_of_work
from worker.budget.limiter import GlobalRateLimiter
from worker.loyalty import LoyaltyClient
from worker.settings import Settings, load_settings
from worker.vendor_config import (
    InvalidFile,
    MissingDigestKey,
    Planned,
    VendorConfig,
    load_directory,
    plan_push,
    push_config,
)

#: A push is run by a person who can wait: longer than a task may hold its slot.
MAX_WAIT_FOR_BUDGET_SECONDS = 60.0
STATES = ("pushed", "would push", "unchanged", "invalid", "failed", "not sent")
BAD_STATES = ("invalid", "failed", "not sent")


class _Report:
    """One line per file, aligned, and the counts for the last line."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.counts: Counter[str] = Counter()

    def line(self, state: str, name: str, detail: str = "") -> None:
        self.counts[state] += 1
        click.echo(f"{state:<10} {name:<{self.width}}  {detail}".rstrip())

    def summary(self, files: int, dry_run: bool) -> str:
        always = ("invalid", "failed")
        shown = [f"{self.counts[s]} {s}" for s in STATES if self.counts[s] or s in always]
        return f"{files} file(s): {', '.join(shown)}" + (
            " (dry run: nothing sent)" if dry_run else ""
        )

    @property
    def ok(self) -> bool:
        return not any(self.counts[state] for state in BAD_STATES)


@click.group()
def vendor() -> None:
    """Vendor redemption configurations (seed 004), kept as JSON files under version control."""


@vendor.command()
@click.argument(
    "directory", type=click.Path(exists=True, file_okay=False, dir_okay=True, path_type=Path)
)
@click.option(
    "--brand-id",
    type=click.IntRange(min=1),
    help="Brand of the files that name none (default: LOYALTY_BRAND_ID).",
)
@click.option("--dry-run", is_flag=True, help="Check the files and list what would be sent.")
def push(directory: Path, brand_id: int | None, dry_run: bool) -> None:
    """Check every DIRECTORY/*.json and send the configurations that changed.

    Each file is a vendor redemption configuration: the page's request body plus "id" (and
    optionally "brandId"); see worker/vendor_config/__init__.py for the shape. Every problem of a
    file is listed. A configuration whose content is the same as at its last success (5016) is not
    sent again. Values of apiHeaders are never printed, logged or stored; what is stored to tell a
    change is keyed by RECON_VENDOR_DIGEST_KEY, which a file holding them needs.

    Exit status: 0 when every file is pushed or unchanged, 1 when a file is invalid or its push
    failed (run it again to retry), 2 for a bad argument.

    \b
    Examples:
      recon vendor push vendor-configs/ --dry-run
      recon vendor push vendor-configs/ --brand-id 61
    """
    settings = load_settings()
    files = load_directory(directory, default_brand_id=brand_id or settings.loyalty_brand_id)
    if not files:
        raise click.UsageError(f"{directory} holds no *.json files")
    report = _Report(width=max(len(item.source.name) for item in files))
    engine = engine_for(settings.database_url)
    key = settings.vendor_digest_key.get_secret_value().encode()
    with unit_of_work(engine) as session:
        valid = [item for item in files if isinstance(item, VendorConfig)]
        try:
            planned = plan_push(session=session, configs=valid, digest_key=key)
        except MissingDigestKey as exc:
            raise click.ClickException(str(exc)) from None
        plans = {plan.config.source: plan for plan in planned}
        changed = [plan for plan in plans.values() if plan.changed]
        for item in files:
            if isinstance(item, InvalidFile):
                report.line("invalid", item.source.name, f"{len(item.problems)} problem(s)")
                for problem in item.problems:
                    click.echo(f"    {problem}")
            elif not plans[item.source].changed:
                report.line("unchanged", item.source.name, _address(item))
            elif dry_run:
                shape = f"{item.body['redemptionType']}, {len(item.body['actions'])} action(s)"
                report.line("would push", item.source.name, f"{_address(item)} ({shape})")
        if changed and not dry_run:
            with _client(settings, engine) as client:
                _send(changed, session=session, client=client, report=report)
    click.echo(report.summary(len(files), dry_run))
    if not report.ok:
        raise click.exceptions.Exit(1)


def _send(
    changed: list[Planned], *, session: Session, client: LoyaltyClient, report: _Report
) -> None:
    stopped = ""
    for plan in changed:
        name, where = plan.config.source.name, _address(plan.config)
        if stopped:
            report.line("not sent", name, f"{where}: {stopped}")
            continue
        result = push_config(session=session, client=client.vendor, planned=plan)
        request = f", request id {result.request_id}" if result.request_id else ""
        if result.status == "succeeded":
            report.line("pushed", name, f"{where}: {result.code}{request}")
        else:
            code = f"[{result.code}] " if result.code is not None else ""
            retry = "; push again to retry" if result.status == "gave_up" else ""
            report.line("failed", name, f"{where}: {code}{result.message}{request}{retry}")
        if result.unauthorized:
            stopped = "the platform refused our credentials (check LOYALTY_API_*)"


def _address(config: VendorConfig) -> str:
    return f"id {config.config_id} brand {config.brand_id}"


def _client(settings: Settings, engine: Engine) -> LoyaltyClient:
    # The push spends the same per-key budget as the workers: it goes through the shared limiter.
    limiter = GlobalRateLimiter(
        engine,
        key=settings.api_key,
        per_minute=settings.rate_limit_per_minute,
        max_wait_seconds=MAX_WAIT_FOR_BUDGET_SECONDS,
    )
    return LoyaltyClient.from_settings(settings, throttle=limiter.acquire)


def register(group: click.Group) -> None:
    group.add_command(vendor)
