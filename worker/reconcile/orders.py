"""Reconciliation: attach a bill to the redemptions that belong to it. Plain functions.

Each call to the platform is followed by a commit of its outcome rows and item states (the
``Ledger``), so what was sent is on record before the next call, and a crash re-sends at most one
idempotent update. On PostgreSQL the open work is read, and each call's record written, with one
statement each on the task's autocommit connection: no transaction to open or close around them.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable
from itertools import groupby

import structlog
from sqlalchemy import Engine

from models.redemptions import COUPON, FAILED, SUCCEEDED
from worker.budget.limiter import Throttled, customer_busy
from worker.loyalty import (
    CouponUpdate,
    Customer,
    LocalRejection,
    LoyaltyClient,
    LoyaltyError,
    RateLimited,
    is_transient_code,
)
from worker.loyalty.validation import check_coupon_update
from worker.reconcile.claim import Claim, claimed
from worker.reconcile.ledger import Ledger
from worker.reconcile.locks import LockScope
from worker.reconcile.open_work import Bill, OpenItem, read_open_work
from worker.reconcile.outcomes import (
    OrderReport,
    Policy,
    Verdict,
    amount,
    error_verdict,
    outcome_values,
    succeeded,
    throttled_verdict,
    transient_verdict,
)

log = structlog.get_logger(__name__)

#: A bill's coupons go in one call per customer (DESIGN.md), but an order's events published
#: together reach several intake consumers at once, and a sibling coupon may be stored a batch
#: later than its bill: a task that sends at once then needs a second call for it (10 extra
#: calls for 100 bills in one burst run with 4 workers). So coupons on a bill stored less than
#: this long ago wait until it is this old, and the open work is read again. Intake batches
#: flush within RECON_INTAKE_FLUSH_MS (20 ms), but four consumers starting on one burst
#: committed up to a few hundred milliseconds apart: 0.1 s still let 10 extra calls through.
SIBLINGS_SETTLE_SECONDS = 0.25


def reconcile_order(
    engine: Engine,
    client: LoyaltyClient,
    *,
    order_ref: str,
    policy: Policy,
    scope: LockScope | None = None,
) -> OrderReport:
    """Send the bill of ``order_ref`` to every open redemption that belongs to it. ``scope``:
    the task's lock scope when it works on several orders one after the other."""
    report = OrderReport(order_ref)
    idle = False

    def take(locks: LockScope) -> bool:
        # Most tasks of an order find it done (each of its events may enqueue it): one
        # statement says so, without a lock or a session.
        nonlocal idle
        got = locks.try_open_order(order_ref)
        idle = got is None
        return bool(got)

    with claimed(engine, take, scope=scope) as claim:
        if claim is None:
            report.busy = not idle
            return report
        ledger = Ledger(engine, claim.locks.connection)
        claim.undo = ledger.discard  # a deferral puts nothing on record
        found = _read_open_work(claim, order_ref)
        settle = _settle_seconds(*found) if found else 0.0
        if settle > 0:
            # With the order's lock held: a sibling's task meanwhile finds the order busy and
            # comes back later, to find nothing open.
            time.sleep(settle)
            found = _read_open_work(claim, order_ref)
        if found is None:
            return report  # redemptions wait for their bill, or all are done
        transaction, items = found
        _send_all(ledger, client, claim.locks, transaction, items, policy, report)
    if claim.deferred_for is not None:
        # Not an attempt: nothing was sent. Come back when the budget allows.
        report.later(claim.deferred_for)
        log.info("reconcile.deferred", order_ref=order_ref, reason=claim.deferred_because)
    return report


def _settle_seconds(transaction: Bill, items: list[OpenItem]) -> float:
    """How long to wait for sibling coupons still on their way (``SIBLINGS_SETTLE_SECONDS``)."""
    if not any(item.kind == COUPON for item in items):
        return 0.0
    age = (dt.datetime.now(dt.UTC) - transaction.created_at).total_seconds()
    # A clock ahead of ours (another host) makes the bill look young: never wait longer.
    return min(max(SIBLINGS_SETTLE_SECONDS - age, 0.0), SIBLINGS_SETTLE_SECONDS)


def _read_open_work(claim: Claim, order_ref: str) -> tuple[Bill, list[OpenItem]] | None:
    return read_open_work(claim.locks.connection, claim.session, order_ref)


def _send_all(
    ledger: Ledger,
    client: LoyaltyClient,
    locks: LockScope,
    transaction: Bill,
    items: Iterable[OpenItem],
    policy: Policy,
    report: OrderReport,
) -> None:
    def customer_of(item: OpenItem) -> tuple[str, str, str]:
        return item.kind, item.customer_type, item.customer_value

    for (kind, customer_type, customer_value), group in groupby(items, key=customer_of):
        batch = list(group)
        customer = Customer(customer_type, customer_value)  # type: ignore[arg-type]
        with locks.customer(f"{customer_type}:{customer_value}"):
            if kind == COUPON:
                send_coupon_batch(ledger, client, transaction, customer, batch, policy, report)
            else:
                for item in batch:
                    send_points_update(ledger, client, transaction, customer, item, policy, report)
                    ledger.commit()
        ledger.commit()


def send_coupon_batch(
    ledger: Ledger,
    client: LoyaltyClient,
    transaction: Bill,
    customer: Customer,
    batch: list[OpenItem],
    policy: Policy,
    report: OrderReport,
) -> None:
    """One PUT /v2/coupon/redeem for all of a customer's coupons on the bill; decide per item.

    Local rules are checked item by item: an item we know the platform would refuse gets its own
    ``failed`` outcome and is left out, and its siblings are still sent.
    """
    sendable: list[OpenItem] = []
    updates: list[CouponUpdate] = []
    for item in batch:
        item.attempts += 1
        update = CouponUpdate(
            redemption_id=_coupon_id(item.redemption_id),
            bill_amount=amount(transaction.bill_amount),
            transaction_number=transaction.bill_number,
            bill_id=transaction.bill_id,
            custom_fields=dict(transaction.custom_fields or {}),
        )
        try:
            check_coupon_update(update)
        except LocalRejection as error:
            verdict = Verdict(FAILED, error.code, error.message)
            ledger.record(item, transaction, verdict, None, report)
            continue
        sendable.append(item)
        updates.append(update)
    if not updates:
        return
    batch = sendable
    report.calls += 1
    try:
        result = client.coupons.update_redemptions(customer=customer, items=updates)
    except RateLimited as error:
        for item in batch:
            item.attempts -= 1
        _throttled(ledger, batch, transaction, error, report)
    except LoyaltyError as error:
        _note_busy(error.code)
        for item in batch:
            verdict = error_verdict(error, attempt=item.attempts, policy=policy)
            ledger.record(item, transaction, verdict, error.exchange, report)
        return
    for item in batch:
        answer = result.item(_coupon_id(item.redemption_id))
        if answer is None:
            verdict = transient_verdict(
                code=None,
                message="the platform's answer did not mention this redemption",
                attempt=item.attempts,
                policy=policy,
            )
        elif answer.succeeded:
            verdict = succeeded(answer.code, answer.message or "Coupon redemption updated")
        elif is_transient_code(answer.code):
            _note_busy(answer.code)
            verdict = transient_verdict(
                code=answer.code, message=answer.message, attempt=item.attempts, policy=policy
            )
        else:
            verdict = Verdict(FAILED, answer.code, answer.message or "refused by the platform")
        ledger.record(item, transaction, verdict, result.exchange, report)
    if result.partial:
        # The batch's own word: the platform says status true, code 762 (partly updated).
        failed = len(result.failed_items)
        message = f"{result.entity_message} ({failed} of {len(result.items)} items not updated)"
        ledger.add(
            outcome_values(
                kind=COUPON,
                verdict=Verdict(SUCCEEDED, result.entity_code, message),
                attempt=max(item.attempts for item in batch),
                exchange=result.exchange,
                redemption_id=None,
                order_ref=transaction.order_ref,
                customer=customer.identifier_value,
                event_id=transaction.event_id,
                transaction=transaction,
            )
        )


def _coupon_id(text: str | None) -> int:
    # Stored as text; a value that is not a number is left for check_coupon_update to refuse.
    try:
        return int(text or 0)
    except ValueError:
        return 0


def send_points_update(
    ledger: Ledger,
    client: LoyaltyClient,
    transaction: Bill,
    customer: Customer,
    item: OpenItem,
    policy: Policy,
    report: OrderReport,
) -> None:
    """One PUT /v2/points/updateRedemption; local refusals are recorded, never sent."""
    item.attempts += 1
    try:
        result = client.points.update_redemption(
            entity=customer,
            redemption_id=item.redemption_id,
            external_reference_number=None
            if item.redemption_id
            else item.external_reference_number,
            bill_number=transaction.bill_number,
            bill_id=transaction.bill_id,
            purpose=transaction.purpose,
            custom_fields=transaction.custom_fields or None,
        )
    except LocalRejection as error:
        ledger.record(item, transaction, Verdict(FAILED, error.code, error.message), None, report)
        return
    except RateLimited as error:
        report.calls += 1
        item.attempts -= 1
        _throttled(ledger, [item], transaction, error, report)
    except LoyaltyError as error:
        report.calls += 1
        _note_busy(error.code)
        verdict = error_verdict(error, attempt=item.attempts, policy=policy)
        ledger.record(item, transaction, verdict, error.exchange, report)
        return
    report.calls += 1
    verdict = succeeded(None, "Points redemption updated")
    ledger.record(item, transaction, verdict, result.exchange, report)


def _throttled(
    ledger: Ledger,
    items: list[OpenItem],
    transaction: Bill,
    error: RateLimited,
    report: OrderReport,
) -> None:
    """A 429 is on record for each item but costs none an attempt; the rest of the order waits
    for the pause every process now observes (the task comes back with a countdown)."""
    verdict = throttled_verdict(error)
    for item in items:
        ledger.record(item, transaction, verdict, error.exchange, report)
    ledger.commit()
    raise Throttled(verdict.retry_in or 0.0)


def _note_busy(code: int | None) -> None:
    # 521 delays only its customer: its items retry, the order's other customers go on.
    if code == 521:
        customer_busy()
