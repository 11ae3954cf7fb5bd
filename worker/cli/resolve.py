"""`recon resolve`: an operator's decision on a points redemption whose outcome is unknown."""

from __future__ import annotations

import getpass

import click
from sqlalchemy import or_, select

from models.redemptions import FAILED, SUCCEEDED, UNKNOWN, PointsRedeemRequest
from models.session import engine_for, unit_of_work
from worker.reconcile.outcomes import Verdict
from worker.reconcile.redeem import record_outcome, store_redemption
from worker.settings import load_settings


@click.command()
@click.argument("reference")
@click.option(
    "--confirmed",
    "decision",
    flag_value="confirmed",
    help="The points WERE taken; give the platform's redemption id.",
)
@click.option(
    "--not-taken",
    "decision",
    flag_value="not_taken",
    help="The points were NOT taken (nothing to reconcile).",
)
@click.option("--redemption-id", help="The platform's redemption id (with --confirmed).")
@click.option("--reason", required=True, help="Why: what the operator checked. Kept in the audit.")
@click.option("--operator", default=None, help="Who decides (default: the login name).")
def resolve(
    reference: str,
    decision: str | None,
    redemption_id: str | None,
    reason: str,
    operator: str | None,
) -> None:
    """Record a decision on an `unknown` points redeem request, found by REFERENCE.

    REFERENCE is the request's event_id or its external_reference_number (see
    `recon audit unknown`). The decision is a new outcome row; nothing is changed or deleted.

    Example: recon resolve evt-123 --confirmed --redemption-id Fnpztw --reason "seen in console"
    """
    if decision is None:
        raise click.UsageError("say what was decided: --confirmed or --not-taken")
    if decision == "confirmed" and not redemption_id:
        raise click.BadParameter(
            "--confirmed needs the platform's id", param_hint="--redemption-id"
        )
    if decision == "not_taken" and redemption_id:
        raise click.BadParameter("--not-taken takes no redemption id", param_hint="--redemption-id")
    if not reason.strip():
        raise click.BadParameter("give a reason", param_hint="--reason")
    who = operator or getpass.getuser()
    settings = load_settings()
    with unit_of_work(engine_for(settings.database_url)) as session:
        request = session.scalars(
            select(PointsRedeemRequest)
            .where(
                or_(
                    PointsRedeemRequest.event_id == reference,
                    PointsRedeemRequest.external_reference_number == reference,
                )
            )
            .with_for_update()
        ).first()
        if request is None:
            raise click.BadParameter(
                f"no points redeem request {reference!r}", param_hint="REFERENCE"
            )
        if request.state != UNKNOWN:
            raise click.ClickException(
                f"request {reference} is {request.state}, not unknown: nothing to resolve"
            )
        if decision == "confirmed":
            request.redemption_id = redemption_id
            request.redemption_ref = store_redemption(session, request)
            verdict = Verdict(
                SUCCEEDED, None, f"operator confirmed the points were taken: {reason}"
            )
        else:
            verdict = Verdict(FAILED, None, f"operator found the points were not taken: {reason}")
        request.state = verdict.status
        record_outcome(session, request, verdict, None, operator=who)
        session.commit()
        order_ref = request.order_ref
    click.echo(f"recorded: {reference} is {verdict.status} (by {who})")
    if decision == "confirmed":
        click.echo(
            f"order {order_ref}: the sweeper attaches its bill within "
            f"{settings.sweep_after_seconds} s (or run `recon backfill`)"
        )


def register(group: click.Group) -> None:
    group.add_command(resolve)
