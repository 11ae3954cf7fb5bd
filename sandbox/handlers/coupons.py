"""PUT /v2/coupon/redeem (seed 003): attach bill details to earlier coupon redemptions.

Shape errors refuse the whole call (HTTP 400, v2 envelope); the page is silent on their codes,
so the 91xx codes are ours (see sandbox/README.md). Otherwise every item gets its own
redemptionStatus: 761 updated, 510 unknown id or another customer's.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sandbox.customer_locks import customer_key
from sandbox.endpoint import Endpoint, Request
from sandbox.formats import customer_id, epoch_ms, iso_utc
from sandbox.replies import Reply, json_reply, v2_errors

if TYPE_CHECKING:
    from sandbox.app import SandboxApp

PATH = "/v2/coupon/redeem"
IDENTIFIER_TYPES = ("mobile", "email", "externalId", "cardnumber")
FIELDS = ("billAmount", "transactionNumber", "billId", "customFields")

BAD_REDEMPTIONS = 9101
BAD_REDEMPTION_ID = 9102
BAD_BILL_AMOUNT = 9103
BAD_BILL_ID = 9104
BAD_CUSTOM_FIELDS = 9105
BAD_TRANSACTION_NUMBER = 9106
BAD_USER = 9107

UPDATED = {"status": True, "code": 761, "message": "Coupon redemption update successful"}
PARTIAL = {"status": True, "code": 762, "message": "Coupon redemption update partially successful"}
INVALID = {"status": False, "code": 510, "message": "Invalid Redemption ids present"}


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_string_map(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def the_user(body: dict[str, Any]) -> tuple[str, str] | None:
    """(identifier type, value) when `user` names exactly one customer, else None."""
    user = body.get("user")
    if not isinstance(user, dict) or len(user) != 1:
        return None
    ((kind, value),) = user.items()
    if kind not in IDENTIFIER_TYPES or not isinstance(value, str) or not value.strip():
        return None
    return kind, value


def customers(body: Any) -> list[str]:
    user = the_user(body) if isinstance(body, dict) else None
    return [customer_key(*user)] if user else []


def _item_problem(index: int, item: Any) -> tuple[int, str] | None:
    where = f"redemptions[{index}]"
    if not isinstance(item, dict):
        return BAD_REDEMPTIONS, f"{where} must be an object"
    if not is_int(item.get("redemptionId")):
        return BAD_REDEMPTION_ID, f"{where}.redemptionId is required and must be an integer"
    amount = item.get("billAmount")
    if not (is_int(amount) or isinstance(amount, Decimal)) or amount is None or amount < 0:
        return BAD_BILL_AMOUNT, f"{where}.billAmount is required and must be a number >= 0"
    bill_id = item.get("billId")
    if bill_id is not None and (not is_int(bill_id) or not 0 < bill_id < 10**19):
        return BAD_BILL_ID, f"{where}.billId must be a positive integer of at most 19 digits"
    number = item.get("transactionNumber")
    if number is not None and not isinstance(number, str):
        return BAD_TRANSACTION_NUMBER, f"{where}.transactionNumber must be a string"
    fields = item.get("customFields")
    if fields is not None and not is_string_map(fields):
        return BAD_CUSTOM_FIELDS, f"{where}.customFields must be an object of string to string"
    return None


def _problem(body: dict[str, Any]) -> tuple[int, str] | None:
    items = body.get("redemptions")
    if not isinstance(items, list) or not items:
        return BAD_REDEMPTIONS, "redemptions must be a non-empty list"
    for index, item in enumerate(items):
        problem = _item_problem(index, item)
        if problem:
            return problem
    if the_user(body) is None:
        kinds = ", ".join(IDENTIFIER_TYPES)
        return BAD_USER, f"user must have exactly one of {kinds}, with a non-empty string value"
    return None


def user_object(kind: str, value: str) -> dict[str, Any]:
    """A small version of the page's user object: enough for a client to read the id."""
    uid = customer_id(kind, value)
    identifiers = [{"type": kind, "value": value}]
    profile = {
        "firstName": "",
        "lastName": "",
        "fields": {},
        "allFields": {},
        "identifiers": identifiers,
        "commChannels": [],
        "userId": uid,
        "accountId": "",
        "autoUpdateTime": iso_utc(epoch_ms()),
        "identifiersAll": identifiers,
    }
    return {"id": uid, "profiles": [profile]}


def handle(app: SandboxApp, request: Request) -> Reply:
    body = request.body
    problem = _problem(body)
    if problem:
        return v2_errors(*problem, status=400)
    kind, value = the_user(body) or ("", "")
    echoed, failed = [], 0
    for item in body["redemptions"]:
        fields = {name: item[name] for name in FIELDS if item.get(name) is not None}
        updated = app.store.update_coupon(item["redemptionId"], kind, value, fields)
        failed += not updated
        echoed.append({**item, "redemptionStatus": UPDATED if updated else INVALID})
    if failed < len(echoed):
        app.stats.bump("coupon_updates", len(echoed) - failed)
    status = UPDATED if not failed else INVALID if failed == len(echoed) else PARTIAL
    entity = {
        "redemptions": echoed,
        "user": user_object(kind, value),
        "status": status,
        "totalCount": len(echoed),
        "failedCount": failed,
    }
    return json_reply(
        200, {"entity": entity, "warnings": [], "errors": [], "success": failed < len(echoed)}
    )


def refuse(body: Any, code: int, message: str) -> Reply:
    return v2_errors(code, message)


ENDPOINT = Endpoint(
    method="PUT",
    name=f"PUT {PATH}",
    pattern=re.compile(re.escape(PATH) + "$"),
    handle=handle,
    refuse=refuse,
    customers=customers,
)
