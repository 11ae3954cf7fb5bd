"""Long-running services: migrate, worker, beat, sandbox."""

from __future__ import annotations

import click

from worker.settings import load_settings


@click.command()
@click.option("--revision", default="head", show_default=True, help="Alembic revision to reach.")
def migrate(revision: str) -> None:
    """Upgrade the database at RECON_DATABASE_URL to the newest schema."""
    from worker.ops import migrate as migrations

    settings = load_settings()
    migrations.upgrade(settings.database_url, revision)
    click.echo(f"database is at revision {revision}")


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--concurrency", "-c", default=2, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--hostname",
    "-n",
    default=None,
    help="Celery node name (default: recon-PID@HOST, unique per process; %h is the host name).",
)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(concurrency: int, hostname: str | None, celery_args: tuple[str, ...]) -> None:
    """Run a worker: the intake consumer and the reconciliation tasks.

    Extra arguments are passed to `celery worker`.
    """
    from worker.app import run_worker
    from worker.cli.broker import check_login

    settings = load_settings()
    # Celery would log a refused login as a crash with its traceback; say it in one line.
    check_login(settings.broker_url)
    run_worker(settings, concurrency=concurrency, hostname=hostname, extra=celery_args)


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def beat(celery_args: tuple[str, ...]) -> None:
    """Run the scheduler: the sweeper every few minutes and the nightly backfill."""
    from worker.app import run_beat
    from worker.cli.broker import check_login

    settings = load_settings()
    check_login(settings.broker_url)
    run_beat(settings, extra=celery_args)


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8780, show_default=True, type=click.IntRange(0, 65535))
@click.option("--rate-limit", type=click.IntRange(0), help="Requests per minute per API key.")
@click.option("--error-rate", type=click.FloatRange(0, 1), help="Share of 5xx answers.")
@click.option("--slow-rate", type=click.FloatRange(0, 1), help="Share of slow answers.")
@click.option("--drop-rate", type=click.FloatRange(0, 1), help="Share of dropped connections.")
@click.option(
    "--lost-rate", type=click.FloatRange(0, 1), help="Share of answers lost after effect."
)
@click.option("--seed", type=int, help="Seed for the fault injection.")
def sandbox(host: str, port: int, **faults: float | int | None) -> None:
    """Run the stand-in loyalty API (real HTTP, in-memory state, fault injection)."""
    from sandbox.server import main as sandbox_main

    argv = ["--host", host, "--port", str(port)]
    for name, value in faults.items():
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    raise SystemExit(sandbox_main(argv))


def register(group: click.Group) -> None:
    for command in (migrate, worker, beat, sandbox):
        group.add_command(command)
