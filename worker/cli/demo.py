"""`recon demo`: the whole product in one process, on embedded defaults."""

from __future__ import annotations

import click


@click.command()
@click.option("--orders", default=240, show_default=True, type=click.IntRange(1, 5000))
@click.option("--seed", default=7, show_default=True, type=int)
@click.option(
    "--timeout",
    default=120.0,
    show_default=True,
    type=click.FloatRange(5, 3600),
    help="Give up waiting for the pipeline after this many seconds.",
)
@click.option(
    "--keep/--discard",
    default=True,
    show_default=True,
    help="Keep the demo's database (recon-demo/recon.sqlite3, the default RECON_DATABASE_URL) "
    "afterwards, for `recon audit ...`; each run replaces it.",
)
def demo(orders: int, seed: int, timeout: float, keep: bool) -> None:
    """Run everything in one process: SQLite, in-memory broker, worker and sandbox.

    Publishes a realistic mix of orders (out of order, duplicates, an invalid coupon id, a
    malformed message, a few injected 5xx, a points redeem request) and prints the audit.
    Everything it leaves is in recon-demo/ under the current folder: its database
    (recon.sqlite3) and its JSON log (demo.log).
    """
    from worker.tools.demo import run_demo

    raise SystemExit(run_demo(orders=orders, seed=seed, timeout=timeout, keep=keep))


def register(group: click.Group) -> None:
    group.add_command(demo)
