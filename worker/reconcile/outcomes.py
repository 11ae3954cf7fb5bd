"""Turning calls and their answers into outcome rows (append-only) and item states."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import structlog
from celery.utils.time import get_exponential_backoff_interval
from sqlalchemy.orm import Session

from models.base import utcnow
from models.outcomes import Outcome
from models.redemptions import FAILED, GAVE_UP, RETRYING, SUCCEEDED
from worker.budget.limiter import DEFAULT_PAUSE_SECONDS
from worker.loyalty import Exchange, LoyaltyError, RateLimited, Transient, Unauthorized
from worker.observe import metrics
from worker.reconcile.open_work import Bill

log = structlog.get_logger(__name__)

#: Celery's retry message must come back before RabbitMQ's consumer_timeout (30 min): a wait
#: longer than this is left to the sweeper and the backfill.
MAX_BACKOFF_SECONDS = 600


@dataclass(frozen=True)
class Policy:
    """How often and how patiently transient failures are retried."""

    max_attempts: int
    retry_base_seconds: int


@dataclass(frozen=True)
class Verdict:
    """What an attempt means for its item: a status, and when to try again if at all."""

    status: str
    code: int | None
    message: str
    retry_in: float | None = None


def backoff(attempt: int, base: int, retry_after: float | None = None) -> float:
    """Exponential back-off with full jitter (Celery's), never shorter than Retry-After."""
    delay = float(
        get_exponential_backoff_interval(
            factor=base, retries=attempt - 1, maximum=MAX_BACKOFF_SECONDS, full_jitter=True
        )
    )
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(max(delay, 0.5), MAX_BACKOFF_SECONDS)


def transient_verdict(
    *,
    code: int | None,
    message: str,
    attempt: int,
    policy: Policy,
    retry_after: float | None = None,
    final_status: str = GAVE_UP,
) -> Verdict:
    """Retry later, or give up (``final_status``) once the attempts are spent."""
    if attempt >= policy.max_attempts:
        return Verdict(
            final_status, code, f"{message} (attempt {attempt} of {policy.max_attempts})"
        )
    delay = backoff(attempt, policy.retry_base_seconds, retry_after)
    return Verdict(RETRYING, code, f"{message} (next attempt in {delay:.0f} s)", delay)


def error_verdict(error: LoyaltyError, *, attempt: int, policy: Policy) -> Verdict:
    """Transient errors retry; an auth failure retries too (it is configuration, not the item)."""
    if isinstance(error, Unauthorized):
        message = f"credentials refused by the platform; check LOYALTY_API_*: {error.message}"
        return transient_verdict(code=401, message=message, attempt=attempt, policy=policy)
    if isinstance(error, Transient):
        retry_after = error.retry_after if isinstance(error, RateLimited) else None
        return transient_verdict(
            code=error.code,
            message=error.message,
            attempt=attempt,
            policy=policy,
            retry_after=retry_after,
        )
    return Verdict(FAILED, error.code, error.message)


def throttled_verdict(error: RateLimited) -> Verdict:
    """A 429: the platform did nothing, so it is recorded but is not an attempt. Every process
    pauses the key (the limiter did that when the answer came); this item comes back after it."""
    pause = error.retry_after if error.retry_after is not None else DEFAULT_PAUSE_SECONDS
    message = (
        f"throttled by the platform (HTTP 429): not counted as an attempt; every worker pauses "
        f"this API key for {pause:.0f} s"
    )
    return Verdict(RETRYING, None, message, pause)


def succeeded(code: int | None, message: str) -> Verdict:
    return Verdict(SUCCEEDED, code, message)


#: Every column ``outcome_values`` fills, in its order (the ledger writes them by hand).
OUTCOME_COLUMNS = (
    "at", "kind", "redemption_id", "order_ref", "bill_number", "bill_id", "bill_amount",
    "customer", "attempt", "http_status", "code", "message", "status", "event_id", "request_id",
    "request_excerpt", "response_excerpt", "operator",
)  # fmt: skip


def outcome_values(
    *,
    kind: str,
    verdict: Verdict,
    attempt: int,
    exchange: Exchange | None,
    redemption_id: str | None,
    order_ref: str | None,
    customer: str | None,
    event_id: str | None,
    transaction: Bill | None = None,
    operator: str | None = None,
) -> dict[str, Any]:
    """The columns of one audit row."""
    return {
        "at": utcnow(),
        "kind": kind,
        "redemption_id": redemption_id,
        "order_ref": order_ref,
        "bill_number": transaction.bill_number if transaction else None,
        "bill_id": transaction.bill_id if transaction else None,
        "bill_amount": transaction.bill_amount if transaction else None,
        "customer": customer,
        "attempt": attempt,
        "http_status": exchange.http_status if exchange else None,
        "code": verdict.code,
        "message": verdict.message[:2000],
        "status": verdict.status,
        "event_id": event_id,
        "request_id": exchange.request_id if exchange else None,
        "request_excerpt": exchange.request_excerpt if exchange else None,
        "response_excerpt": exchange.response_excerpt if exchange else None,
        "operator": operator,
    }


def add_outcome(session: Session, values: dict[str, Any]) -> Outcome:
    """An audit row (``outcome_values``) added to ``session``, counted when it commits."""
    outcome = Outcome(**values)
    session.add(outcome)
    metrics.outcome_recorded(session, kind=outcome.kind, status=outcome.status, code=outcome.code)
    return outcome


def amount(value: Decimal | None) -> Decimal:
    return value if value is not None else Decimal(0)


@dataclass
class OrderReport:
    """What one run over an order did: calls made, statuses reached, when to come back."""

    order_ref: str
    busy: bool = False
    calls: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    retry_in: float | None = None

    def later(self, delay: float) -> None:
        self.retry_in = delay if self.retry_in is None else min(self.retry_in, delay)

    def as_dict(self) -> dict[str, object]:
        return {
            "order_ref": self.order_ref,
            "busy": self.busy,
            "calls": self.calls,
            "statuses": dict(self.statuses),
            "retry_in": self.retry_in,
        }
