"""Local rules: refuse, before any HTTP call, what the platform would refuse for good.

DESIGN.md: the worker never sends a request it knows will get 748, 749 or 1219, nor points it
knows are 801 or 878; it records the local reason instead. Each rule raises ``LocalRejection``
with a message a person can act on.

Codes. Where a page documents the rule's code we use it (748, 749, 1219, 801, 878, and 510 for a
coupon redemption id that cannot exist), so an operator sees the same code whether we or the
platform refused. Where a page states a field rule but no code (billId a positive whole number of
at most 19 digits, purpose at most 255 characters, customFields string to string, a bill amount
that is not negative, a required value that is missing), we use ``LOCAL_INVALID_FIELD = 400``,
"bad request": borrowing an unrelated platform code (750 "update failed", 8015 "malformed
identifier") would tell an operator the platform gave a reason it never gave. A ``LocalRejection``
has no exchange, and its outcome row no HTTP status, so 400 there cannot be mistaken for an HTTP
answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from worker.loyalty.errors import LocalRejection
from worker.loyalty.types import IDENTIFIER_TYPES, CouponUpdate, Customer

NO_UPDATE_REQUESTED = 748
ONE_IDENTIFIER_NEEDED = 749
ENTITY_INVALID = 1219
INVALID_POINTS = 801
POINTS_PRECISION = 878
COUPON_INVALID_ID = 510
LOCAL_INVALID_FIELD = 400

#: the platform stores ids as Java longs; 19 digits alone would allow larger values.
JAVA_LONG_MAX = 9_223_372_036_854_775_807
PURPOSE_MAX_CHARS = 255
POINTS_MAX_PLACES = 3


def _present(value: str | None) -> bool:
    return value is not None and value.strip() != ""


def decimal_places(value: Decimal) -> int:
    """Significant decimal places: ``1.100`` has 1, ``100`` has 0. No context rounding."""
    _sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int) or exponent >= 0 or not any(digits):
        return 0
    trailing = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -exponent - trailing)


def _strip_zeros(value: Decimal) -> Decimal:
    """``1.500`` -> ``1.5`` exactly (``normalize()`` would round to the context's precision)."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    strip = min(len(digits) - 1, max(0, -exponent))
    while strip and digits[-1] == 0:
        digits, exponent, strip = digits[:-1], exponent + 1, strip - 1
    return Decimal((sign, digits, exponent))


def check_points(points: Decimal | int) -> Decimal:
    """Points to redeem (seed 002): at most three decimal places (878), above zero (801).

    Returns the value to send, without trailing zeros, so ``1.1000`` is not mistaken upstream
    for four places.
    """
    if isinstance(points, bool) or not isinstance(points, Decimal | int):
        raise LocalRejection(INVALID_POINTS, f"points must be a decimal number, not {points!r}")
    value = Decimal(points)
    if not value.is_finite():
        raise LocalRejection(INVALID_POINTS, f"points must be a finite number, not {value}")
    if decimal_places(value) > POINTS_MAX_PLACES:
        raise LocalRejection(
            POINTS_PRECISION,
            f"points {value} have more than {POINTS_MAX_PLACES} decimal places",
        )
    if value <= 0:
        raise LocalRejection(INVALID_POINTS, f"points must be above zero, not {value}")
    return _strip_zeros(value)


def check_bill_id(bill_id: Any) -> None:
    """billId (seeds 000, 003): a positive whole number of at most 19 digits (a Java long)."""
    if bill_id is None:
        return
    if (
        isinstance(bill_id, bool)
        or not isinstance(bill_id, int)
        or not 0 < bill_id <= JAVA_LONG_MAX
    ):
        raise LocalRejection(
            LOCAL_INVALID_FIELD,
            f"bill_id must be a positive whole number of at most 19 digits "
            f"(at most {JAVA_LONG_MAX}), not {bill_id!r}",
        )


def check_purpose(purpose: Any) -> None:
    """purpose (seed 000): at most 255 characters."""
    if purpose is None:
        return
    if not isinstance(purpose, str):
        raise LocalRejection(LOCAL_INVALID_FIELD, "purpose must be text")
    if len(purpose) > PURPOSE_MAX_CHARS:
        raise LocalRejection(
            LOCAL_INVALID_FIELD,
            f"purpose has {len(purpose)} characters; the platform allows {PURPOSE_MAX_CHARS}",
        )


def check_custom_fields(custom_fields: Any) -> None:
    """customFields: an object of non-empty string keys to string values."""
    if custom_fields is None:
        return
    if not isinstance(custom_fields, Mapping):
        raise LocalRejection(LOCAL_INVALID_FIELD, "custom_fields must be an object of text to text")
    for key, value in custom_fields.items():
        if not isinstance(key, str) or not key.strip():
            raise LocalRejection(
                LOCAL_INVALID_FIELD, f"custom_fields has a key that is not text: {key!r}"
            )
        if not isinstance(value, str):
            raise LocalRejection(
                LOCAL_INVALID_FIELD,
                f"custom_fields[{key!r}] must be text, not {type(value).__name__}",
            )


def _complete(customer: Any) -> bool:
    return (
        isinstance(customer, Customer)
        and customer.identifier_type in IDENTIFIER_TYPES
        and isinstance(customer.identifier_value, str)
        and customer.identifier_value.strip() != ""
    )


def check_entity(entity: Any) -> None:
    """The customer a points redemption belongs to: a known identifier type and a value."""
    if not _complete(entity):
        raise LocalRejection(
            ENTITY_INVALID,
            "the customer is missing or incomplete: it needs an identifier type "
            f"({', '.join(IDENTIFIER_TYPES)}) and a value",
        )


def check_points_update(
    *,
    entity: Any,
    redemption_id: str | None,
    external_reference_number: str | None,
    bill_number: str | None,
    bill_id: int | None,
    purpose: str | None,
    custom_fields: Mapping[str, str] | None,
) -> None:
    """The rules of ``PUT /v2/points/updateRedemption`` (seeds 000, 001)."""
    if _present(redemption_id) == _present(external_reference_number):
        raise LocalRejection(
            ONE_IDENTIFIER_NEEDED,
            "exactly one of redemption_id and external_reference_number is needed "
            f"(got {'both' if _present(redemption_id) else 'neither'})",
        )
    check_entity(entity)
    if not (_present(bill_number) or bill_id is not None or _present(purpose) or custom_fields):
        raise LocalRejection(
            NO_UPDATE_REQUESTED,
            "nothing to update: give at least one of bill_number, bill_id, purpose, custom_fields",
        )
    check_bill_id(bill_id)
    check_purpose(purpose)
    check_custom_fields(custom_fields)


def check_coupon_update(item: CouponUpdate) -> None:
    """One item of ``PUT /v2/coupon/redeem`` (seed 003)."""
    redemption_id = item.redemption_id
    if (
        isinstance(redemption_id, bool)
        or not isinstance(redemption_id, int)
        or not 0 < redemption_id <= JAVA_LONG_MAX
    ):
        raise LocalRejection(
            COUPON_INVALID_ID,
            f"coupon redemption id must be a positive whole number, not {redemption_id!r}",
        )
    amount = item.bill_amount
    if not isinstance(amount, Decimal | int) or isinstance(amount, bool):
        raise LocalRejection(LOCAL_INVALID_FIELD, "bill_amount must be a decimal number")
    if not Decimal(amount).is_finite() or amount < 0:
        raise LocalRejection(LOCAL_INVALID_FIELD, f"bill_amount must be zero or more, not {amount}")
    if not isinstance(item.transaction_number, str):
        raise LocalRejection(LOCAL_INVALID_FIELD, "transaction_number must be text")
    check_bill_id(item.bill_id)
    check_custom_fields(item.custom_fields)


def check_coupon_batch(customer: Any, items: Sequence[CouponUpdate]) -> None:
    """A whole coupon call: a customer, at least one item, every item valid.

    One bad item refuses the batch; callers that want the others sent check items one by one
    with ``check_coupon_update`` first.
    """
    if not _complete(customer):
        raise LocalRejection(
            LOCAL_INVALID_FIELD, "the coupon update needs a customer identifier type and value"
        )
    if not items:
        raise LocalRejection(LOCAL_INVALID_FIELD, "no coupon redemptions to update")
    for item in items:
        check_coupon_update(item)


def check_redeem(
    *,
    mobile: str,
    points: Decimal | int,
    external_reference_number: str,
    custom_fields: Mapping[str, str] | None,
) -> Decimal:
    """The rules of ``POST /v1.1/points/redeem`` (seed 002); returns the points to send."""
    value = check_points(points)
    if not isinstance(mobile, str) or not mobile.strip():
        raise LocalRejection(LOCAL_INVALID_FIELD, "the customer's mobile number is required")
    # Without it the platform cannot de-duplicate a retry, and points could be spent twice.
    if not isinstance(external_reference_number, str) or not external_reference_number.strip():
        raise LocalRejection(
            LOCAL_INVALID_FIELD, "an external_reference_number is required to redeem points"
        )
    check_custom_fields(custom_fields)
    return value
