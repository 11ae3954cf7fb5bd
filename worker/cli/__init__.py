"""`recon`: one command for the worker, the tools around it and the audit trail."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from worker.observe.logging import configure_logging
from worker.settings import SettingsError


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _where(url: str) -> str:
    from models.session import shown_url

    return shown_url(url)


def explain(exc: BaseException) -> str | None:
    """One line naming the problem for the errors a user's setup causes; None for a bug."""
    from amqp.exceptions import AMQPError
    from kombu.exceptions import OperationalError as BrokerError
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

    from models.session import MissingDatabase

    if isinstance(exc, SettingsError | MissingDatabase):
        return str(exc)
    if isinstance(exc, ArgumentError | NoSuchModuleError):
        return f"RECON_DATABASE_URL is not a usable database URL: {_first_line(exc)}"
    if isinstance(exc, DBAPIError):
        from worker.settings import load_settings

        try:
            where = _where(load_settings().database_url)
        except SettingsError:
            where = "RECON_DATABASE_URL"
        return f"cannot use the database at {where}: {_first_line(exc)}"
    if isinstance(exc, BrokerError | ConnectionError):
        return f"cannot reach the broker (RECON_BROKER_URL): {_first_line(exc)}"
    if isinstance(exc, AMQPError):
        from worker.cli.broker import refusal
        from worker.settings import load_settings

        try:
            url = load_settings().broker_url
        except SettingsError:
            url = ""
        return refusal(exc, url=url)
    return None


class ReconGroup(click.Group):
    """Turns configuration and connection problems into one line and exit 1, never a
    traceback (``recon --debug ...`` shows it)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            message = explain(exc)
            if message is None or (ctx.obj or {}).get("debug"):
                raise
            raise click.ClickException(message) from exc


@click.group(cls=ReconGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="redemption-reconciler", prog_name="recon")
@click.option("--debug", is_flag=True, help="Show the full traceback of an error.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Redemption reconciler: attaches bills to earlier coupon and points redemptions.

    Configuration comes from environment variables (see README.md, "Configuration", and
    .env.example).
    """
    ctx.obj = {"debug": debug}
    # Every command checks every setting up front, even one it does not read itself: a typo
    # in the environment is reported now, by name, not when a later command trips over it.
    from worker.settings import load_settings

    load_settings()


def _register() -> None:
    from worker.cli import (
        audit,
        backfill,
        dead,
        declare,
        demo,
        publish,
        resolve,
        service,
        vendor,
        web,
    )

    for module in (service, declare, publish, demo, backfill, audit, resolve, vendor, web, dead):
        module.register(cli)


#: Commands that run until stopped: their log is their output, at RECON_LOG_LEVEL wherever it goes.
SERVICES = frozenset({"worker", "beat", "web", "sandbox", "demo"})


def log_level(args: list[str], *, environ: Any = os.environ, terminal: bool | None = None) -> str:
    """The level of this run's log lines.

    A command that prints a report for a person (``recon vendor push``, ``backfill``, ``dead
    replay``, ...) writes it to stdout and its log lines to stderr. On a terminal both land on one
    screen, so there, unless RECON_LOG_LEVEL says otherwise, only warnings and errors are logged:
    the report says what happened, call by call. Redirected (``2>> push.log``, the journal, a
    pipe), stderr gets every line at RECON_LOG_LEVEL (INFO by default).
    """
    chosen = str(environ.get("RECON_LOG_LEVEL", "")).strip().upper()
    if chosen in ("DEBUG", "INFO", "WARNING", "ERROR"):
        return chosen
    command = next((arg for arg in args if not arg.startswith("-")), "")
    on_terminal = sys.stderr.isatty() if terminal is None else terminal
    return "WARNING" if on_terminal and command not in SERVICES else "INFO"


def main(argv: list[str] | None = None) -> None:
    # Logs go to stderr as JSON, once for the whole process, so command output on stdout
    # (tables, CSV, JSON, reports) stays clean for scripts and never mixes with a log line.
    # `recon worker` keeps this configuration.
    args = argv if argv is not None else sys.argv[1:]
    configure_logging(log_level(args))
    _register()
    cli.main(args=args, prog_name="recon")
