"""`recon`: one command for the worker, the tools around it and the audit trail."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from worker.logging import configure_logging
from worker.settings import SettingsError


class ReconGroup(click.Group):
    """Turns configuration problems into a one-line message, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SettingsError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=ReconGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="redemption-reconciler", prog_name="recon")
def cli() -> None:
    """Redemption reconciler: attaches bills to earlier coupon and points redemptions.

    Configuration comes from environment variables (see README.md, "Configuration").
    """


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


def main(argv: list[str] | None = None) -> None:
    # Logs go to stderr as JSON, once for the whole process, so command output on stdout
    # (tables, CSV, JSON) stays clean for scripts. `recon worker` keeps this configuration.
    level = os.environ.get("RECON_LOG_LEVEL", "INFO").upper()
    configure_logging(level if level in ("DEBUG", "INFO", "WARNING", "ERROR") else "INFO")
    _register()
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="recon")
