"""Long-running services: migrate, worker, beat, sandbox."""

from __future__ import annotations

import click

from worker.settings import Settings, load_settings


@click.command()
@click.option("--revision", default="head", show_default=True, help="Alembic revision to reach.")
@click.option(
    "--check", is_flag=True,
    help="Change nothing: only check that RECON_DATABASE_SERVICE_ROLE holds what the service "
    "needs and nothing that could rewrite the audit trail.",
)  # fmt: skip
def migrate(revision: str, check: bool) -> None:
    """Upgrade the database at RECON_DATABASE_URL to the newest schema.

    On PostgreSQL, run it as the migration role (the owner of the tables) with
    RECON_DATABASE_SERVICE_ROLE naming the role the service runs as: it then grants that role
    its privileges (SELECT and INSERT only on the audit trail) and checks them.
    """
    from worker.ops import migrate as migrations

    settings = load_settings()
    if not check:
        migrations.upgrade(settings.database_url, revision)
        click.echo(f"database is at revision {revision}")
    verdict = migrations.settle_service_role(
        settings.database_url, role=settings.database_service_role, grant=not check
    )
    if verdict.problem:
        raise click.ClickException(verdict.problem)
    if verdict.note:
        click.echo(verdict.note, err=True)


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
    _check_topology(settings)
    run_worker(settings, concurrency=concurrency, hostname=hostname, extra=celery_args)


def _check_topology(settings: Settings) -> None:
    """Refuse to start on queues declared otherwise (a 0.2 vhost), naming the command that fixes
    it: Celery would fail to declare them at every reconnect. A broker that does not answer is
    left to the worker, which waits for it."""
    from kombu import Connection

    from worker.ops.upgrade import stale_queues
    from worker.queues import task_queue_names

    try:
        with Connection(settings.broker_url, connect_timeout=10) as connection:
            connection.connect()
            stale = stale_queues(
                connection,
                task_queue_names=task_queue_names(),
                delivery_limit=settings.delivery_limit,
            )
    except Exception:
        return
    if stale:
        raise click.ClickException(
            f"{', '.join(stale)} exist(s) declared otherwise (release 0.2's classic queues, or "
            "another RECON_DELIVERY_LIMIT): stop every worker, then run `recon declare --upgrade`"
        )


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
@click.option(
    "--user",
    "users",
    multiple=True,
    metavar="NAME:PASSWORD",
    help="A till user it accepts (repeatable); replaces the built-in store.server.",
)
def sandbox(host: str, port: int, users: tuple[str, ...], **faults: float | int | None) -> None:
    """Run the stand-in loyalty API (real HTTP, in-memory state, fault injection).

    It accepts one till user unless --user says otherwise: store.server with the password
    server123 (Basic auth), and the OAuth client key recon-key with the secret recon-secret. It
    prints them when it starts. A worker talks to it with

    \b
      LOYALTY_API_URL=http://127.0.0.1:8780
      LOYALTY_API_USERNAME=store.server
      LOYALTY_API_PASSWORD=server123
    """
    from sandbox.server import main as sandbox_main

    argv = ["--host", host, "--port", str(port)]
    for user in users:
        argv += ["--user", user]
    for name, value in faults.items():
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    raise SystemExit(sandbox_main(argv))


def register(group: click.Group) -> None:
    for command in (migrate, worker, beat, sandbox):
        group.add_command(command)
