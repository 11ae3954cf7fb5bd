"""Spending a customer's points (``points.redeem_requested``): the one call that must not repeat.

Every attempt sends the same ``external_reference_number``, derived from the event; the platform
de-duplicates on it, so a retry after a lost answer returns the original redemption instead of
taking the points again. The attempt is committed as ``in_flight`` *before* the call: if the
process dies mid-call, the next run knows an earlier attempt may have reached the platform.
When the platform's answers cannot settle whether the points were taken, the request ends
``unknown`` and waits for an operator (``recon resolve``).
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from models.matching import attach_redemption, lock_match_keys
from models.redemptions import (
    FAILED,
    GAVE_UP,
    IN_FLIGHT,
    PENDING,
    POINTS,
    RETRYING,
    UNKNOWN,
    PointsRedeemRequest,
    Redemption,
)
from models.upsert import insert
from worker.budget.limiter import customer_busy
from worker.loyalty import (
    Exchange,
    LocalRejection,
    LoyaltyClient,
    LoyaltyError,
    RateLimited,
    Rejected,
    Transient,
)
from worker.reconcile.claim import claimed
from worker.reconcile.outcomes import (
    Policy,
    Verdict,
    add_outcome,
    error_verdict,
    outcome_values,
    succeeded,
    throttled_verdict,
    transient_verdict,
)

log = structlog.get_logger(__name__)
KIND = "points_redeem"
WORKABLE = (PENDING, RETRYING, IN_FLIGHT)


@dataclass
class RedeemReport:
    request_id: int
    status: str | None = None
    order_ref: str | None = None
    retry_in: float | None = None
    busy: bool = False


def redeem_points(
    engine: Engine, client: LoyaltyClient, *, request_id: int, policy: Policy
) -> RedeemReport:
    """Make one attempt at a points redeem request, if it is still open."""
    report = RedeemReport(request_id)
    with claimed(engine, lambda locks: locks.try_redeem(request_id)) as claim:
        if claim is None:
            report.busy = True
            return report
        session = claim.session
        request = session.get(PointsRedeemRequest, request_id)
        if request is None or request.state not in WORKABLE:
            return report
        report.order_ref = request.order_ref
        if request.state == IN_FLIGHT:
            # A previous attempt was under way when its process died.
            request.ambiguous = True
        request.attempts += 1
        request.state = IN_FLIGHT
        session.commit()
        claim.undo = lambda: _not_attempted(session, request)
        with claim.locks.customer(f"{request.customer_type}:{request.customer_value}"):
            verdict = _attempt(session, client, request, policy)
        request.state = verdict.status
        session.commit()
        report.status = verdict.status
        report.retry_in = verdict.retry_in
    if claim.deferred_for is not None:
        report.retry_in = claim.deferred_for
    return report


def _not_attempted(session: Session, request: PointsRedeemRequest) -> None:
    # Deferred before the call: the attempt it was counted as did not happen.
    request.attempts -= 1
    request.state = RETRYING
    session.commit()


def _attempt(
    session: Session, client: LoyaltyClient, request: PointsRedeemRequest, policy: Policy
) -> Verdict:
    exchange = None
    try:
        result = client.points.redeem(
            mobile=request.customer_value,
            points=request.points,
            external_reference_number=request.external_reference_number,
            notes=request.notes,
            validation_code=request.validation_code,
            custom_fields=request.custom_fields,
            program_id=request.program_id,
            skip_validation=request.skip_validation,
        )
    except LocalRejection as error:
        verdict = Verdict(FAILED, error.code, error.message)
    except Rejected as error:
        exchange = error.exchange
        verdict = Verdict(FAILED, error.code, error.message)
        if request.ambiguous:
            verdict = Verdict(
                UNKNOWN,
                error.code,
                f"refused ({error.message}) after an earlier attempt whose effect is not known; "
                "an operator decides",
            )
    except RateLimited as error:
        # Refused before it could take effect, and not an attempt: it may not bring the request
        # closer to gave_up or unknown.
        exchange = error.exchange
        request.attempts -= 1
        verdict = throttled_verdict(error)
    except Transient as error:
        exchange = error.exchange
        if error.code == 521:
            customer_busy()
        request.ambiguous = request.ambiguous or error.ambiguous
        final = UNKNOWN if request.ambiguous else GAVE_UP
        retry_after = getattr(error, "retry_after", None)
        verdict = transient_verdict(
            code=error.code,
            message=error.message,
            attempt=request.attempts,
            retry_after=retry_after,
            final_status=final,
            policy=policy,
        )
    except LoyaltyError as error:
        exchange = error.exchange
        verdict = error_verdict(error, attempt=request.attempts, policy=policy)
    else:
        exchange = result.exchange
        request.redemption_id = result.redemption_id
        request.ambiguous = False
        verdict = succeeded(result.code, f"Points redeemed: {result.points_redeemed}")
        request.redemption_ref = store_redemption(session, request)
    request.last_error = None if verdict.status == "succeeded" else verdict.message
    record_outcome(session, request, verdict, exchange)
    log.info(
        "outcome",
        kind=KIND,
        order_ref=request.order_ref,
        status=verdict.status,
        code=verdict.code,
        attempt=request.attempts,
    )
    return verdict


def record_outcome(
    session: Session,
    request: PointsRedeemRequest,
    verdict: Verdict,
    exchange: Exchange | None,
    *,
    operator: str | None = None,
) -> None:
    """The audit row of one attempt at (or one decision on) a redeem request."""
    add_outcome(
        session,
        outcome_values(
            kind=KIND,
            verdict=verdict,
            attempt=request.attempts,
            exchange=exchange,
            redemption_id=request.redemption_id or request.external_reference_number,
            order_ref=request.order_ref,
            customer=request.customer_value,
            event_id=request.event_id,
            operator=operator,
        ),
    )


def store_redemption(session: Session, request: PointsRedeemRequest) -> int:
    """The new points redemption joins its order like any other, to get the bill later."""
    lock_match_keys(session, [f"order:{request.order_ref}", f"points:{request.redemption_id}"])
    session.execute(
        insert(session, Redemption)
        .values(
            kind=POINTS,
            redemption_id=request.redemption_id,
            external_reference_number=request.external_reference_number,
            order_ref=request.order_ref,
            customer_type=request.customer_type,
            customer_value=request.customer_value,
            points=request.points,
            program_id=request.program_id,
            event_id=request.event_id,
        )
        .on_conflict_do_nothing()
    )
    attach_redemption(
        session,
        kind=POINTS,
        redemption_id=request.redemption_id,
        external_reference_number=request.external_reference_number,
    )
    return session.scalars(
        select(Redemption.id).where(
            Redemption.kind == POINTS, Redemption.redemption_id == request.redemption_id
        )
    ).one()
