"""The embedded demo: SQLite, Celery's in-memory broker, an in-process worker and the sandbox.

Everything a production deployment does happens here too, through the same code: events go
through the intake consumer, tasks retry through Celery, calls go through the rate limiter.
"""

from __future__ import annotations

import time
from pathlib import Path

from celery.contrib.testing.worker import start_worker
from kombu import Connection
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine, func, select

from models.events import InboxEvent
from models.redemptions import IN_FLIGHT, PENDING, RETRYING, PointsRedeemRequest, Redemption
from models.session import engine_for, unit_of_work
from sandbox.config import SandboxConfig
from sandbox.server import start_sandbox
from worker.app import configure
from worker.audit.outcomes import count_outcomes, outcomes_for_order
from worker.cli.output import render
from worker.observe.logging import configure_logging
from worker.ops import migrate
from worker.queues import REDRIVE_QUEUE, TASK_QUEUE
from worker.settings import DEFAULT_DATABASE_URL, load_settings
from worker.tools.publishing import dumps, publish_bodies
from worker.tools.scenario import build_scenario, register_with_sandbox

# The default database, so that `recon audit ...` as written in the README reads the demo's; its
# folder holds everything else the demo leaves (its log), and is ignored by git.
DEMO_DB = Path(DEFAULT_DATABASE_URL.removeprefix("sqlite:///"))
DEMO_DIR = DEMO_DB.parent
DEMO_LOG = DEMO_DIR / "demo.log"
DEMO_USER, DEMO_PASSWORD = "demo.till", "demo-password"
INJECTED_5XX = 3
TRAIL_FIELDS = (
    "at",
    "kind",
    "redemption_id",
    "bill_number",
    "attempt",
    "http_status",
    "code",
    "status",
    "message",
)
#: What the trail shows on a terminal (80 columns): the rest with `recon audit order --wide`.
TRAIL_NARROW = ("kind", "redemption_id", "code", "status", "message")


def run_demo(*, orders: int, seed: int, timeout: float, keep: bool) -> int:
    console = Console()
    started = time.monotonic()
    DEMO_DIR.mkdir(exist_ok=True)
    for leftover in DEMO_DIR.glob(DEMO_DB.name + "*"):
        leftover.unlink()
    log_file = DEMO_LOG
    configure_logging("INFO", stream=log_file.open("w"))
    sandbox = start_sandbox(
        SandboxConfig(users={DEMO_USER: DEMO_PASSWORD}, rate_limit_per_minute=6000)
    )
    settings = load_settings({}).replace(
        database_url=f"sqlite:///{DEMO_DB}",
        broker_url="memory://",
        loyalty_api_url=sandbox.url,
        loyalty_api_username=DEMO_USER,
        loyalty_api_password=DEMO_PASSWORD,
        rate_limit_per_minute=3000,
        retry_base_seconds=1,
    )
    migrate.upgrade(settings.database_url)
    app = configure(settings, embedded=True)
    scenario = build_scenario(
        orders, seed=seed, invalid_coupon=True, malformed=True, redeem_requests=1, prefix="demo"
    )
    register_with_sandbox(scenario, sandbox.url)
    # A few platform hiccups: the first coupon calls get 503 and must retry to success.
    _admin_script(sandbox.url, "/v2/coupon/redeem", [{"status": 503}] * INJECTED_5XX)
    bodies = [dumps(event) for event in scenario.events] + scenario.extra_bodies
    console.print(
        f"[bold]recon demo[/]: {orders} orders, {scenario.items} redemptions, "
        f"{scenario.redeem_requests} points redeem request, {len(bodies)} messages "
        f"(shuffled, {len(bodies) - len({b for b in bodies})} duplicates, 1 malformed), "
        f"{INJECTED_5XX} injected 503s; sandbox at {sandbox.url}; logs in {log_file}"
    )
    engine = engine_for(settings.database_url)
    expected_items = scenario.items + scenario.redeem_requests
    try:
        with start_worker(
            app,
            pool="threads",
            concurrency=4,
            perform_ping_check=False,
            loglevel="WARNING",
            queues=[TASK_QUEUE, REDRIVE_QUEUE],
            shutdown_timeout=30,
        ):
            with Connection(settings.broker_url) as conn:
                publish_bodies(conn, settings.events_exchange, bodies)
            finished = _wait(engine, expected_items, len(set(bodies)), timeout, console)
    finally:
        sandbox.stop()
    with unit_of_work(engine) as session:
        render(
            count_outcomes(session=session),
            ("kind", "status", "code", "count"),
            "table",
            title="Outcomes by kind, status and code",
        )
        rejected = session.scalars(select(InboxEvent).where(InboxEvent.status == "rejected")).all()
        for event in rejected:
            console.print(
                f"[yellow]rejected message[/] {event.event_id or '(no id)'}: {event.reason}"
            )
        if scenario.invalid_coupon_order:
            trail = [
                o.as_row()
                for o in outcomes_for_order(
                    session=session, order_ref=scenario.invalid_coupon_order
                )
            ]
            render(
                trail,
                TRAIL_FIELDS,
                "table",
                title=f"Audit trail of order {scenario.invalid_coupon_order}",
                narrow=TRAIL_NARROW,
            )
    engine.dispose()
    elapsed = time.monotonic() - started
    if not keep:
        for leftover in DEMO_DIR.glob(DEMO_DB.name + "*"):
            leftover.unlink()
    verdict = "all items reached an outcome" if finished else "[red]timed out[/]"
    console.print(f"{verdict} in {elapsed:.1f} s")
    if keep:
        console.print(
            f"The demo's database is {DEMO_DB.resolve()}: try `recon audit summary` or "
            f"`recon audit order {scenario.invalid_coupon_order or 'demo-7-000000'}` here "
            "(with RECON_DATABASE_URL unset). `recon demo` replaces it; "
            f"`rm -r {DEMO_DIR}` starts clean.",
            markup=False,
            highlight=False,
        )
    return 0 if finished else 1


def _admin_script(url: str, path: str, faults: list[dict[str, object]]) -> None:
    import requests

    requests.post(
        f"{url}/_admin/script", json={"path": path, "faults": faults}, timeout=10
    ).raise_for_status()


def _wait(
    engine: Engine, expected_items: int, messages: int, timeout: float, console: Console
) -> bool:
    columns = (
        TextColumn("[bold]reconciling"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    deadline = time.monotonic() + timeout
    with Progress(*columns, console=console, transient=True) as progress:
        bar = progress.add_task("items", total=expected_items)
        while time.monotonic() < deadline:
            with unit_of_work(engine) as session:
                stored = session.scalar(select(func.count()).select_from(InboxEvent)) or 0
                done = (
                    session.scalar(
                        select(func.count())
                        .select_from(Redemption)
                        .where(
                            Redemption.transaction_id.is_not(None),
                            Redemption.state.not_in((PENDING, RETRYING)),
                        )
                    )
                    or 0
                )
                requests_done = (
                    session.scalar(
                        select(func.count())
                        .select_from(PointsRedeemRequest)
                        .where(PointsRedeemRequest.state.not_in((PENDING, RETRYING, IN_FLIGHT)))
                    )
                    or 0
                )
            # Redeemed points become a redemption of their own, hence the min().
            progress.update(bar, completed=min(done + requests_done, expected_items))
            if stored >= messages and done + requests_done >= expected_items:
                return True
            time.sleep(0.3)
    return False
