"""Points redemptions: attach a bill to an earlier one (seeds 000/001), and redeem (seed 002)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from worker.loyalty.envelopes import (
    as_bool,
    as_decimal,
    as_int,
    expect_dict,
    raise_for_v2_errors,
    refuse,
)
from worker.loyalty.errors import ProtocolError
from worker.loyalty.http import LoyaltyHttp
from worker.loyalty.types import (
    POINTS_REDEEMED,
    Customer,
    Exchange,
    PointsRedeemResult,
    PointsUpdateResult,
)
from worker.loyalty.validation import check_points_update, check_redeem

UPDATE_PATH = "/v2/points/updateRedemption"
REDEEM_PATH = "/v1.1/points/redeem"
#: v1.1's aggregate status codes: all ok, some failed, all failed. Anything else is a real code.
_V11_AGGREGATE_CODES = frozenset({200, 201, 500})


def decide_points_update(exchange: Exchange, body: Any) -> PointsUpdateResult:
    """A non-empty v2 ``errors`` fails the call even with HTTP 200 (748, 749, 750, 1212, 1219,
    8015: rejected; 461, 521: transient)."""
    raise_for_v2_errors(body, exchange)
    return PointsUpdateResult.from_api(body, exchange)


def _v11_item(response: dict[str, Any]) -> dict[str, Any] | None:
    responses = response.get("responses")
    if not isinstance(responses, dict):
        return None
    points = responses.get("points")
    if isinstance(points, list):
        points = points[0] if points else None
    return points if isinstance(points, dict) else None


def decide_redeem(
    exchange: Exchange, body: Any, *, external_reference_number: str = ""
) -> PointsRedeemResult:
    """Judge a v1.1 answer by its body, not its status line (an all-failed answer is HTTP 500
    with a normal envelope): the item's code decides, 800 being success."""
    envelope = expect_dict(body, exchange, "the v1.1 answer")
    response = expect_dict(envelope.get("response"), exchange, "the v1.1 response")
    status = expect_dict(response.get("status"), exchange, "the v1.1 status")
    item = _v11_item(response)
    item_status = item.get("item_status") if item is not None else None
    if item is None or not isinstance(item_status, dict):
        code = as_int(status.get("code"))
        message = str(status.get("message") or "")
        if code is not None and code not in _V11_AGGREGATE_CODES:
            refuse(code, message or f"the platform answered {code}", exchange)
        raise ProtocolError(f"the v1.1 answer has no item status ({message})", exchange=exchange)

    code = as_int(item_status.get("code"))
    message = str(item_status.get("message") or "")
    if code != POINTS_REDEEMED:
        if code is None:
            raise ProtocolError(f"the item status has no code ({message})", exchange=exchange)
        refuse(code, message or f"the platform answered {code}", exchange)
    if as_bool(item_status.get("success")) is False:
        raise ProtocolError(f"item code 800 with success false ({message})", exchange=exchange)

    redemption_id = item.get("redemption_id")
    points_redeemed = as_decimal(item.get("points_redeemed"))
    if not redemption_id or points_redeemed is None:
        # The points may be spent, but without the id nothing can be reconciled later.
        raise ProtocolError("code 800 without redemption_id or points", exchange=exchange)
    reference = item.get("external_reference_number") or external_reference_number
    return PointsRedeemResult(
        exchange=exchange,
        code=POINTS_REDEEMED,
        redemption_id=str(redemption_id),
        points_redeemed=points_redeemed,
        balance=as_decimal(item.get("balance")),
        external_reference_number=str(reference),
    )


class PointsClient:
    """``PUT /v2/points/updateRedemption`` (seeds 000/001) and ``POST /v1.1/points/redeem``
    (seed 002)."""

    def __init__(self, http: LoyaltyHttp) -> None:
        self._http = http

    def update_redemption(
        self,
        *,
        entity: Customer,
        redemption_id: str | None = None,
        external_reference_number: str | None = None,
        bill_number: str | None = None,
        bill_id: int | None = None,
        purpose: str | None = None,
        custom_fields: Mapping[str, str] | None = None,
    ) -> PointsUpdateResult:
        """Seeds 000/001: PUT /v2/points/updateRedemption — attach billNumber, billId, purpose or
        customFields to an earlier points redemption, named by exactly one of ``redemption_id``
        and ``external_reference_number``.

        Local rules first (749, 1219, 748, billId, purpose, customFields): when one fails,
        ``LocalRejection`` is raised and no request is sent. Empty strings count as absent.
        """
        check_points_update(
            entity=entity,
            redemption_id=redemption_id,
            external_reference_number=external_reference_number,
            bill_number=bill_number,
            bill_id=bill_id,
            purpose=purpose,
            custom_fields=custom_fields,
        )
        body: dict[str, Any] = {}
        if redemption_id:
            body["redemptionId"] = redemption_id
        else:
            body["externalReferenceNumber"] = external_reference_number
        if bill_number:
            body["billNumber"] = bill_number
        if bill_id is not None:
            body["billId"] = bill_id
        if purpose:
            body["purpose"] = purpose
        if custom_fields:
            body["customFields"] = dict(custom_fields)
        body["entity"] = {
            "type": "CUSTOMER",
            "identifierType": entity.identifier_type,
            "identifierValue": entity.identifier_value,
        }
        return self._http.call("PUT", UPDATE_PATH, json=body, decide=decide_points_update)

    def redeem(
        self,
        *,
        mobile: str,
        points: Decimal,
        external_reference_number: str,
        transaction_number: str | None = None,
        notes: str | None = None,
        validation_code: str | None = None,
        custom_fields: Mapping[str, str] | None = None,
        program_id: str | None = None,
        skip_validation: bool = False,
    ) -> PointsRedeemResult:
        """Seed 002: POST /v1.1/points/redeem — spend a customer's points.

        Not idempotent by itself: the platform de-duplicates on ``external_reference_number``,
        so a retry must reuse the same one. Points with more than three decimal places (878) or
        not above zero (801) are refused locally. Item codes 815, 886, 887, 889, 894, 898, 461
        and 521 raise ``Transient`` (not ambiguous: the platform says it did not redeem); any
        other code but 800 raises ``Rejected``.
        """
        value = check_redeem(
            mobile=mobile,
            points=points,
            external_reference_number=external_reference_number,
            custom_fields=custom_fields,
        )
        item: dict[str, Any] = {"points_redeemed": value, "customer": {"mobile": mobile}}
        if transaction_number:
            item["transaction_number"] = transaction_number
        if notes:
            item["notes"] = notes
        if validation_code:
            item["validation_code"] = validation_code
        if custom_fields:
            fields = [{"name": name, "value": text} for name, text in custom_fields.items()]
            item["custom_fields"] = {"field": fields}
        item["external_reference_number"] = external_reference_number
        params = {"format": "json"}
        if program_id:
            params["program_id"] = program_id
        params["skip_validation"] = "true" if skip_validation else "false"

        def decide(exchange: Exchange, body: Any) -> PointsRedeemResult:
            return decide_redeem(
                exchange, body, external_reference_number=external_reference_number
            )

        body = {"root": {"redeem": [item]}}
        return self._http.call("POST", REDEEM_PATH, json=body, params=params, decide=decide)
