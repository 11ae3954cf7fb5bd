"""Coupon redemptions: attach a bill to coupons redeemed before the bill existed (seed 003)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from worker.loyalty.envelopes import raise_for_v2_errors
from worker.loyalty.errors import ProtocolError
from worker.loyalty.http import LoyaltyHttp
from worker.loyalty.types import CouponUpdate, CouponUpdateResult, Customer, Exchange
from worker.loyalty.validation import check_coupon_batch

REDEEM_PATH = "/v2/coupon/redeem"


def coupon_body(customer: Customer, items: Sequence[CouponUpdate]) -> dict[str, Any]:
    """The request body; ``billAmount`` stays a ``Decimal`` and goes out as an exact number."""
    redemptions: list[dict[str, Any]] = []
    for item in items:
        row: dict[str, Any] = {
            "redemptionId": item.redemption_id,
            "billAmount": item.bill_amount,
            "transactionNumber": item.transaction_number,
        }
        if item.bill_id is not None:
            row["billId"] = item.bill_id
        if item.custom_fields:
            row["customFields"] = dict(item.custom_fields)
        redemptions.append(row)
    return {
        "redemptions": redemptions,
        "user": {customer.identifier_type: customer.identifier_value},
    }


def decide_coupon_update(exchange: Exchange, body: Any) -> CouponUpdateResult:
    """Errors in the v2 envelope raise (461/521 transient, others rejected); otherwise each item
    stands on its own code (761 updated, 510 invalid id, ...) and nothing raises for it."""
    raise_for_v2_errors(body, exchange)
    return CouponUpdateResult.from_api(body, exchange)


class CouponClient:
    """``PUT /v2/coupon/redeem`` (seed 003)."""

    def __init__(self, http: LoyaltyHttp) -> None:
        self._http = http

    def update_redemptions(
        self, *, customer: Customer, items: Sequence[CouponUpdate]
    ) -> CouponUpdateResult:
        """Seed 003: PUT /v2/coupon/redeem — attach transactionNumber, billAmount, billId and
        customFields to one customer's earlier coupon redemptions, in one call.

        Per-item failures (510, ...) are returned in ``items``, not raised; the call raises for
        an ``errors`` envelope, a transport failure or a local rule (``LocalRejection``, nothing
        sent). Repeating the same update is harmless: it overwrites the same metadata.
        """
        check_coupon_batch(customer, items)
        result = self._http.call(
            "PUT", REDEEM_PATH, json=coupon_body(customer, items), decide=decide_coupon_update
        )
        missing = {item.redemption_id for item in items} - {r.redemption_id for r in result.items}
        if missing:
            # Every item needs its own outcome; an answer that drops one cannot be recorded.
            # Retrying is safe here (the update is idempotent).
            raise ProtocolError(
                f"the answer has no result for redemption ids {sorted(missing)}",
                exchange=result.exchange,
            )
        return result
