"""Vendor redemption configurations (seed 004)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from worker.loyalty.envelopes import as_int, expect_dict, raise_for_v2_errors, refuse
from worker.loyalty.errors import LocalRejection, ProtocolError
from worker.loyalty.http import LoyaltyHttp
from worker.loyalty.types import VENDOR_UPDATED, Exchange, VendorUpdateResult
from worker.loyalty.validation import LOCAL_INVALID_FIELD

PATH = "/api_gateway/rewards/core/v1/vendor/redemption/{id}/brand/{brand_id}"


def decide_vendor_update(
    exchange: Exchange, body: Any, *, redemption_id: int = 0
) -> VendorUpdateResult:
    """Success is ``status.code == 5016``; any other code is refused (461/521 transient)."""
    raise_for_v2_errors(body, exchange)
    envelope = expect_dict(body, exchange, "the vendor answer")
    status = expect_dict(envelope.get("status"), exchange, "the vendor answer's status")
    code = as_int(status.get("code"))
    message = str(status.get("message") or "")
    if code is None:
        raise ProtocolError(f"the vendor answer has no status code ({message})", exchange=exchange)
    if code != VENDOR_UPDATED:
        refuse(code, message or f"the platform answered {code}", exchange)
    redemption = envelope.get("redemption")
    answered_id = as_int(redemption.get("id")) if isinstance(redemption, dict) else None
    return VendorUpdateResult(
        exchange=exchange,
        code=code,
        message=message,
        redemption_id=answered_id if answered_id is not None else redemption_id,
    )


class VendorClient:
    """``PUT /api_gateway/rewards/core/v1/vendor/redemption/{id}/brand/{brandId}`` (seed 004)."""

    def __init__(self, http: LoyaltyHttp) -> None:
        self._http = http

    def update_vendor_redemption(
        self, *, redemption_id: int, brand_id: int, config: Mapping[str, Any]
    ) -> VendorUpdateResult:
        """Seed 004: PUT /api_gateway/rewards/core/v1/vendor/redemption/{id}/brand/{brandId} —
        replace a vendor redemption configuration; 5016 is success.

        ``config`` is sent as given (its validation belongs to ``recon vendor push``); the values
        of every ``apiHeaders`` object are hidden from the excerpts and logs.
        """
        for name, value in (("redemption id", redemption_id), ("brand id", brand_id)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise LocalRejection(
                    LOCAL_INVALID_FIELD, f"the {name} must be a positive whole number"
                )
        if not isinstance(config, Mapping):
            raise LocalRejection(LOCAL_INVALID_FIELD, "the configuration must be a JSON object")

        def decide(exchange: Exchange, body: Any) -> VendorUpdateResult:
            return decide_vendor_update(exchange, body, redemption_id=redemption_id)

        path = PATH.format(id=redemption_id, brand_id=brand_id)
        return self._http.call("PUT", path, json=dict(config), decide=decide)
