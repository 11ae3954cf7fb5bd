"""PUT /v2/points/updateRedemption (seeds 000 and 001; 000 wins where they disagree).

The page's errors come as HTTP 200 with a non-empty `errors` list, checked in this order:
749 (identifier), 1219 (entity), 1212 (entity type), 748 (nothing to update), then our own
field checks (92xx, HTTP 400: the page gives limits but no codes), then the lookup (8015, 750).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from sandbox.customer_locks import customer_key
from sandbox.endpoint import Endpoint, Request
from sandbox.formats import customer_id, iso_utc, till_id
from sandbox.replies import Reply, json_reply, v2_errors

if TYPE_CHECKING:
    from sandbox.app import SandboxApp

PATH = "/v2/points/updateRedemption"
IDENTIFIER_TYPES = ("mobile", "email", "externalId", "cardnumber")
UPDATABLE = ("billNumber", "billId", "purpose", "customFields")

NO_UPDATE = (748, "No metadata update requested.")
NOT_ONE_IDENTIFIER = (749, "Exactly one redemption identifier needed to identify redemption.")
REVERSED = (750, "Redemption update failed: redemption is reversed")
BAD_ENTITY = (1219, "Entity details not set/invalid.")
BAD_ENTITY_TYPE = (1212, "Entity type passed is not valid.")
NOT_FOUND = (8015, "Invalid or malformed identifier provided in request body.")
BAD_BILL_ID = (9201, "billId must be a positive whole number of at most 19 digits.")
BAD_PURPOSE = (9202, "purpose must be a string of at most 255 characters.")
BAD_BILL_NUMBER = (9203, "billNumber must be a string.")
BAD_CUSTOM_FIELDS = (9204, "customFields must be an object of string to string.")


def given(body: dict[str, Any], name: str) -> Any:
    """The value if the field is really there: null, "" and {} count as not sent."""
    value = body.get(name)
    return None if value in (None, "", {}) else value


def _entity(body: dict[str, Any]) -> dict[str, Any] | None:
    entity = body.get("entity")
    if not isinstance(entity, dict):
        return None
    fields = [entity.get(name) for name in ("type", "identifierType", "identifierValue")]
    if not all(isinstance(f, str) and f.strip() for f in fields):
        return None
    return entity if entity["identifierType"] in IDENTIFIER_TYPES else None


def customers(body: Any) -> list[str]:
    entity = _entity(body) if isinstance(body, dict) else None
    return [customer_key(entity["identifierType"], entity["identifierValue"])] if entity else []


def _bill_id(value: Any) -> int | None:
    """A positive whole number of at most 19 digits, as a JSON integer or a string of digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str):
        text = value
    else:
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) <= 0:
        return None
    return int(text)


def _field_problem(body: dict[str, Any], fields: dict[str, Any]) -> tuple[int, str] | None:
    for name in ("redemptionId", "externalReferenceNumber"):
        if given(body, name) is not None and not isinstance(body[name], str):
            return NOT_FOUND
    if "billId" in fields and _bill_id(fields["billId"]) is None:
        return BAD_BILL_ID
    purpose = fields.get("purpose")
    if purpose is not None and (not isinstance(purpose, str) or len(purpose) > 255):
        return BAD_PURPOSE
    if "billNumber" in fields and not isinstance(fields["billNumber"], str):
        return BAD_BILL_NUMBER
    custom = fields.get("customFields")
    if custom is not None and not (
        isinstance(custom, dict) and all(isinstance(v, str) for v in custom.values())
    ):
        return BAD_CUSTOM_FIELDS
    return None


def render(record: dict[str, Any]) -> dict[str, Any]:
    """The page's success body, from the stored redemption after the update."""
    meta = record["metadata"]
    customer = record["customer"]
    redeemed_at = record.get("redeemed_at") or 0
    custom = meta.get("customFields") or {}
    return {
        "id": record["id"],
        "programId": record.get("program_id") or 973,
        "pointsRedeemed": float(record.get("points") or 0),
        "billId": meta.get("billId", -1),
        "billNumber": meta.get("billNumber", ""),
        "validationCode": record.get("validation_code") or "",
        "notes": record.get("notes") or "",
        "redemptionTime": redeemed_at,
        "pointsRedemptionTime": redeemed_at,
        "tillId": till_id(record.get("till")),
        "tillName": "",
        "pointDeductionList": [],
        "redemptionId": record["redemption_id"],
        "customFields": [{"name": name, "value": value} for name, value in custom.items()],
        "customerId": customer_id(customer["type"], customer["value"]),
        "redemptionPurpose": meta.get("purpose", ""),
        "redemptionDate": iso_utc(redeemed_at),
        "warnings": [],
    }


def handle(app: SandboxApp, request: Request) -> Reply:
    body = request.body
    redemption_id, reference = given(body, "redemptionId"), given(body, "externalReferenceNumber")
    if (redemption_id is None) == (reference is None):
        return v2_errors(*NOT_ONE_IDENTIFIER)
    entity = _entity(body)
    if entity is None:
        return v2_errors(*BAD_ENTITY)
    if entity["type"] != "CUSTOMER":
        return v2_errors(*BAD_ENTITY_TYPE)
    fields = {name: body[name] for name in UPDATABLE if given(body, name) is not None}
    if not fields:
        return v2_errors(*NO_UPDATE)
    problem = _field_problem(body, fields)
    if problem:
        return v2_errors(*problem, status=400)
    if "billId" in fields:
        fields["billId"] = _bill_id(fields["billId"])
    outcome, record = app.store.update_points(
        redemption_id=redemption_id,
        reference=reference,
        kind=entity["identifierType"],
        value=entity["identifierValue"],
        fields=fields,
    )
    if outcome == "missing" or record is None:
        return v2_errors(*NOT_FOUND)
    if outcome == "reversed":
        return v2_errors(*REVERSED)
    app.stats.bump("points_updates")
    return json_reply(200, render(record))


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
