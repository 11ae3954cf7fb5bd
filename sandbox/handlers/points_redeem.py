"""POST /v1.1/points/redeem (seed 002): spend a customer's points.

This is the one call that must never take effect twice, so an item carrying an
`external_reference_number` that this API key already spent is answered with the original
result and takes nothing. The v1.1 envelope's status code says 200 all ok, 201 some failed,
500 all failed; when all failed the HTTP status is 500 too, with the JSON body.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from sandbox.customer_locks import customer_key
from sandbox.endpoint import Endpoint, Request
from sandbox.formats import customer_id, plain_number
from sandbox.replies import Reply, json_reply

if TYPE_CHECKING:
    from sandbox.app import SandboxApp

PATH = "/v1.1/points/redeem"
KNOWN_GROUP = "1"  # the only user_group2_id that exists here; any other gets 1632

REDEEMED = {"success": "true", "code": 800, "message": "Points Redeemed"}
INVALID_POINTS = (801, "Trying to redeem invalid points")
BAD_PRECISION = (878, "Invalid decimal precision in points redeemed")
UNKNOWN_GROUP = (1632, "Invalid or non-existent groupId")
# The page does not give these two; ours (sandbox/README.md).
NO_MOBILE = (9301, "Customer mobile is missing")
INSUFFICIENT = (9302, "Insufficient points balance")


def _items(body: Any) -> list[Any] | None:
    root = body.get("root") if isinstance(body, dict) else None
    items = root.get("redeem") if isinstance(root, dict) else None
    return items if isinstance(items, list) and items else None


def _mobile(item: Any) -> str | None:
    customer = item.get("customer") if isinstance(item, dict) else None
    mobile = customer.get("mobile") if isinstance(customer, dict) else None
    return mobile.strip() if isinstance(mobile, str) and mobile.strip() else None


def customers(body: Any) -> list[str]:
    mobiles = {_mobile(item) for item in _items(body) or []}
    return sorted(customer_key("mobile", m) for m in mobiles if m)


def _points(value: Any) -> Decimal | tuple[int, str]:
    """The points to take, or the item error: 801 for <= 0 or not a number, 878 for > 3 places."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal | str):
        return INVALID_POINTS
    try:
        points = Decimal(value)
    except InvalidOperation:
        return INVALID_POINTS
    if not points.is_finite() or points <= 0:
        return INVALID_POINTS
    # Decimal places as written: "1.1111" and 1.1111 both have four.
    if int(points.as_tuple().exponent) < -3:
        return BAD_PRECISION
    return points


def failed_item(item: Any, code: int, message: str) -> dict[str, Any]:
    points = item.get("points_redeemed") if isinstance(item, dict) else None
    return {
        "mobile": _mobile(item) or "",
        "redemption_id": "",
        "points_redeemed": "" if points is None else str(points),
        "item_status": {"success": "false", "code": str(code), "message": message},
    }


def render(record: dict[str, Any]) -> dict[str, Any]:
    """The page's success item, rebuilt from the stored redemption (so a replay is identical)."""
    points = Decimal(record["points"])
    mobile = record["customer"]["value"]
    effect = {
        "id": record["id"],
        "case_value": "false",
        "num_points": plain_number(points),
        "currency_value": plain_number(points),
        "validation_code": record.get("validation_code") or "",
        "points_redemption_summary_id": str(record["id"]),
        "redeemed_on_bill_number": record.get("transaction_number") or "",
        "redeemed_on_bill_id": -1,
        "type": "points",
    }
    return {
        "mobile": mobile,
        "email": "",
        "external_id": "",
        "user_id": str(customer_id("mobile", mobile)),
        "redemption_id": record["redemption_id"],
        "points_redeemed": record["points"],
        "redemption_purpose": "",
        "redeemed_value": plain_number(points),
        "redeemed_local_value": plain_number(points),
        "balance": plain_number(Decimal(record["balance_after"])),
        "side_effects": {"effect": [effect]},
        "item_status": REDEEMED,
    }


def _text(item: dict[str, Any], name: str) -> str:
    value = item.get(name)
    return value if isinstance(value, str) else ""


def _redeem_one(app: SandboxApp, request: Request, item: Any) -> dict[str, Any]:
    if not isinstance(item, dict):
        return failed_item(item, *INVALID_POINTS)
    reference = item.get("external_reference_number")
    reference = reference if isinstance(reference, str) and reference else None
    if reference:
        app.stats.redeem_request(reference)
    points = _points(item.get("points_redeemed"))
    if isinstance(points, tuple):
        return failed_item(item, *points)
    mobile = _mobile(item)
    if mobile is None:
        return failed_item(item, *NO_MOBILE)
    group = request.query.get("user_group2_id")
    if group is not None and group != KNOWN_GROUP:
        return failed_item(item, *UNKNOWN_GROUP)
    program = request.query.get("program_id", "")
    details = {
        "program_id": int(program) if program.isdigit() else 973,
        "validation_code": _text(item, "validation_code"),
        "notes": _text(item, "notes"),
        "transaction_number": _text(item, "transaction_number"),
    }
    outcome, record = app.store.redeem(
        api_key=request.api_key or "",
        reference=reference,
        mobile=mobile,
        points=points,
        details=details,
    )
    if outcome == "insufficient" or record is None:
        return failed_item(item, *INSUFFICIENT)
    if outcome == "replay":
        app.stats.bump("redeem_replays")
    else:
        app.stats.redeem_effect(reference, mobile, points)
    return render(record)


def envelope(results: list[dict[str, Any]]) -> Reply:
    succeeded = sum(r["item_status"]["success"] == "true" for r in results)
    if succeeded == len(results):
        status = {"success": "true", "code": 200, "message": "Success"}
    elif succeeded:
        status = {"success": "true", "code": 201, "message": "Some requests failed"}
    else:
        status = {"success": "false", "code": 500, "message": "All requests failed"}
    points = results[0] if len(results) == 1 else results
    body = {"response": {"status": status, "responses": {"points": points}}}
    return json_reply(200 if succeeded else 500, body)


def handle(app: SandboxApp, request: Request) -> Reply:
    items = _items(request.body)
    if items is None:
        status = {
            "success": "false",
            "code": 400,
            "message": "root.redeem must be a non-empty list",
        }
        return json_reply(400, {"response": {"status": status, "responses": {}}})
    return envelope([_redeem_one(app, request, item) for item in items])


def refuse(body: Any, code: int, message: str) -> Reply:
    """Every item fails with `code` (521, or a scripted item code), nothing is taken."""
    items = _items(body) or [None]
    return envelope([failed_item(item, code, message) for item in items])


ENDPOINT = Endpoint(
    method="POST",
    name=f"POST {PATH}",
    pattern=re.compile(re.escape(PATH) + "$"),
    handle=handle,
    refuse=refuse,
    customers=customers,
)
