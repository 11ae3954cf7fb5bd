"""PUT /api_gateway/rewards/core/v1/vendor/redemption/{id}/brand/{brandId} (seed 004).

Replaces the stored configuration for (brandId, id); 5016 on success. The page gives no error
codes, so the 94xx codes are ours (HTTP 400, the page's `status` envelope). An id never pushed
before is created rather than refused: the sandbox has no "create" endpoint to seed it with.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from sandbox.endpoint import Endpoint, Request
from sandbox.faults import VENDOR_PREFIX
from sandbox.formats import iso_utc, till_id
from sandbox.replies import Reply, json_reply

if TYPE_CHECKING:
    from sandbox.app import SandboxApp

REDEMPTION_TYPES = frozenset(
    (
        "GAMES",
        "AUCTION",
        "CART_PROMOTION",
        "CASH_WALLET",
        "VENDOR_ONLY_REWARD",
        "VOUCHER",
        "CASH_BACK",
        "INTOUCH_REWARD",
        "PHYSICAL_REWARD",
        "CHARITY",
        "MILES",
        "GIFT_CARD",
        "SWEEPSTAKES",
        "VENDOR_INTOUCH_REWARD",
        "CARD_DISC",
    )
)
UPDATED = {"success": True, "code": 5016, "message": "Vendor redemption updated successfully"}
BAD_PATH_IDS = (9401, "id and brandId must be positive integers")
BAD_REDEMPTION_TYPE = (9402, "redemptionType is missing or not a supported value")
BAD_ACTIONS = (9403, "actions must be a non-empty list of objects")
NO_VENDOR_ID = (9404, "vendorId is required")
BAD_FIELD_TYPE = (9405, "name must be a string and enabled a boolean")


def failure(code: int, message: str, status: int = 400) -> Reply:
    return json_reply(status, {"status": {"success": False, "code": code, "message": message}})


def _problem(request: Request) -> tuple[int, str] | None:
    body = request.body
    ids = [request.params["id"], request.params["brand"]]
    if not all(i.isascii() and i.isdigit() and int(i) > 0 for i in ids):
        return BAD_PATH_IDS
    if body.get("redemptionType") not in REDEMPTION_TYPES:
        return BAD_REDEMPTION_TYPE
    actions = body.get("actions")
    if (
        not isinstance(actions, list)
        or not actions
        or not all(isinstance(a, dict) for a in actions)
    ):
        return BAD_ACTIONS
    vendor_id = body.get("vendorId")
    if vendor_id is None or vendor_id == "" or isinstance(vendor_id, bool | dict | list):
        return NO_VENDOR_ID
    name, enabled = body.get("name"), body.get("enabled")
    if (name is not None and not isinstance(name, str)) or (
        enabled is not None and not isinstance(enabled, bool)
    ):
        return BAD_FIELD_TYPE
    return None


def handle(app: SandboxApp, request: Request) -> Reply:
    problem = _problem(request)
    if problem:
        return failure(*problem)
    body = request.body
    record = app.store.push_vendor(
        int(request.params["brand"]), int(request.params["id"]), body, request.api_key or ""
    )
    app.stats.bump("vendor_pushes")
    redemption = {
        "id": record["id"],
        "name": body.get("name"),
        "redemptionType": body["redemptionType"],
        "enabled": body.get("enabled", True),
        "lastUpdatedOn": record["last_updated_on"],
        "lastUpdatedOnDateTime": iso_utc(record["last_updated_on"]),
        "actionCount": len(body["actions"]),
        "createdBy": None,
        "lastUpdatedBy": till_id(request.api_key),
        "createdOn": record["created_on"],
        "createdOnDateTime": iso_utc(record["created_on"]),
    }
    return json_reply(200, {"status": UPDATED, "redemption": redemption})


def refuse(body: Any, code: int, message: str) -> Reply:
    # A scripted code comes back in the page's own envelope with HTTP 200: the client must
    # read `status.success`, not the status line.
    return failure(code, message, status=200)


ENDPOINT = Endpoint(
    method="PUT",
    name=f"PUT {VENDOR_PREFIX}/{{id}}/brand/{{brandId}}",
    pattern=re.compile(re.escape(VENDOR_PREFIX) + r"/(?P<id>[^/]+)/brand/(?P<brand>[^/]+)$"),
    handle=handle,
    refuse=refuse,
)
