"""/_admin: the test's and the benchmark's side door (no auth, never counted, never faulted).

Seeds what the platform would already know (redemptions made earlier, balances), scripts
failures, changes knobs at run time, and shows what the platform saw.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from sandbox.config import public_view
from sandbox.formats import epoch_ms
from sandbox.replies import Reply, json_reply

if TYPE_CHECKING:
    from sandbox.app import SandboxApp

IDENTIFIER_TYPES = ("mobile", "email", "externalId", "cardnumber")


class BadRequest(ValueError):
    """The admin request is malformed; the message goes back as {"error": ...} with HTTP 400."""


def _list(body: Any, name: str) -> list[Any]:
    items = body.get(name) if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise BadRequest(f'body must be {{"{name}": [...]}}')
    return items


def _customer(where: str, item: dict[str, Any]) -> tuple[str, str]:
    customer = item.get("customer")
    kind = customer.get("type") if isinstance(customer, dict) else None
    value = customer.get("value") if isinstance(customer, dict) else None
    if kind not in IDENTIFIER_TYPES or not isinstance(value, str) or not value:
        raise BadRequest(
            f"{where}.customer must be {{type: {'|'.join(IDENTIFIER_TYPES)}, value: string}}"
        )
    return kind, value


def _decimal(where: str, value: Any) -> Decimal:
    try:
        number = (
            Decimal(value)
            if isinstance(value, str | int | Decimal) and not isinstance(value, bool)
            else None
        )
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        raise BadRequest(f"{where} must be a decimal number or string")
    return number


def _optional_str(where: str, item: dict[str, Any], name: str) -> str | None:
    value = item.get(name)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{where}.{name} must be a string or null")
    return value


def register_coupons(app: SandboxApp, body: Any) -> Reply:
    rows = []
    for index, item in enumerate(_list(body, "redemptions")):
        where = f"redemptions[{index}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object")
        rid = item.get("redemption_id")
        if isinstance(rid, str) and rid.isascii() and rid.isdigit():
            rid = int(rid)
        if not isinstance(rid, int) or isinstance(rid, bool):
            raise BadRequest(f"{where}.redemption_id must be an integer")
        rows.append((rid, *_customer(where, item), _optional_str(where, item, "coupon_code")))
    return json_reply(200, {"registered": app.store.register_coupons(rows)})


def register_points(app: SandboxApp, body: Any) -> Reply:
    records = []
    for index, item in enumerate(_list(body, "redemptions")):
        where = f"redemptions[{index}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where} must be an object")
        kind, value = _customer(where, item)
        state = item.get("state", "active")
        if state not in ("active", "reversed"):
            raise BadRequest(f'{where}.state must be "active" or "reversed"')
        program = item.get("program_id", 973)
        if not isinstance(program, int) or isinstance(program, bool):
            raise BadRequest(f"{where}.program_id must be an integer")
        records.append(
            {
                "redemption_id": _optional_str(where, item, "redemption_id"),
                "external_reference_number": _optional_str(
                    where, item, "external_reference_number"
                ),
                "customer": {"type": kind, "value": value},
                "points": str(_decimal(f"{where}.points", item.get("points", "0"))),
                "state": state,
                "program_id": program,
                "validation_code": _optional_str(where, item, "validation_code") or "",
                "notes": _optional_str(where, item, "notes") or "",
                "transaction_number": _optional_str(where, item, "transaction_number") or "",
                "redeemed_at": epoch_ms(),
                "till": None,
                "balance_after": None,
                "source": "admin",
            }
        )
    ids = app.store.register_points(records)
    return json_reply(200, {"registered": len(ids), "redemption_ids": ids})


def set_balances(app: SandboxApp, body: Any) -> Reply:
    balances = {}
    for index, item in enumerate(_list(body, "customers")):
        where = f"customers[{index}]"
        mobile = item.get("mobile") if isinstance(item, dict) else None
        if not isinstance(mobile, str) or not mobile:
            raise BadRequest(f"{where}.mobile must be a non-empty string")
        balances[mobile] = _decimal(f"{where}.balance", item.get("balance"))
    app.store.set_balances(balances)
    return json_reply(200, {"updated": len(balances)})


def add_script(app: SandboxApp, body: Any) -> Reply:
    path = body.get("path") if isinstance(body, dict) else None
    faults = body.get("faults") if isinstance(body, dict) else None
    if not isinstance(path, str) or not isinstance(faults, list):
        raise BadRequest('body must be {"path": "/v2/...", "faults": [...]}')
    try:
        queued = app.faults.add_script(path, faults)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    return json_reply(200, {"path": path, "queued": queued})


def set_config(app: SandboxApp, body: Any) -> Reply:
    if not isinstance(body, dict):
        raise BadRequest("body must be an object of settings")
    try:
        app.reconfigure(body)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    return json_reply(200, public_view(app.config))


def throttle(app: SandboxApp, body: Any) -> Reply:
    """Throttle every platform request (429 with Retry-After) for the next N seconds."""
    seconds = body.get("seconds") if isinstance(body, dict) else None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float | Decimal):
        raise BadRequest('body must be {"seconds": N}')
    if not 0 < seconds <= 600:
        raise BadRequest("seconds must be more than 0 and at most 600")
    app.limiter.throttle_for(float(seconds))
    return json_reply(200, {"throttled_for": float(seconds)})


def recent_requests(app: SandboxApp, query: dict[str, str]) -> Reply:
    limit = query.get("limit", "100")
    if not limit.isdigit():
        raise BadRequest("limit must be a whole number")
    return json_reply(200, {"requests": app.stats.recent(int(limit), query.get("path"))})


def _found(record: dict[str, Any] | None) -> Reply:
    return (
        json_reply(200, record) if record is not None else json_reply(404, {"error": "not found"})
    )


def _lookup(app: SandboxApp, parts: list[str]) -> Reply | None:
    """GET /_admin/<kind>/<id...>: one stored record."""
    if len(parts) == 2 and parts[0] == "coupons":
        return _found(app.store.coupon(int(parts[1]))) if parts[1].isdigit() else _found(None)
    if len(parts) == 2 and parts[0] == "points":
        return _found(app.store.points(parts[1]))
    if len(parts) == 2 and parts[0] == "customers":
        return json_reply(200, {"mobile": parts[1], "balance": str(app.store.balance(parts[1]))})
    if len(parts) == 3 and parts[0] == "vendor":
        if not (parts[1].isdigit() and parts[2].isdigit()):
            return _found(None)
        return _found(app.store.vendor(int(parts[1]), int(parts[2])))
    return None


def handle(app: SandboxApp, method: str, path: str, query: dict[str, str], body: Any) -> Reply:
    parts = [unquote(p) for p in path.removeprefix("/_admin").strip("/").split("/")]
    name = parts[0]
    posts = {
        "config": set_config,
        "script": add_script,
        "coupons": register_coupons,
        "points": register_points,
        "customers": set_balances,
        "throttle": throttle,
    }
    try:
        if method == "POST" and name == "reset" and len(parts) == 1:
            app.reset()
            return json_reply(200, {"reset": True})
        if method == "POST" and name in posts and len(parts) == 1:
            return posts[name](app, body)
        if method == "GET" and len(parts) == 1:
            if name == "config":
                return json_reply(200, public_view(app.config))
            if name == "script":
                return json_reply(200, {"pending": app.faults.pending()})
            if name == "stats":
                return json_reply(200, app.stats.snapshot())
            if name == "requests":
                return recent_requests(app, query)
        if method == "GET":
            found = _lookup(app, parts)
            if found is not None:
                return found
    except BadRequest as exc:
        return json_reply(400, {"error": str(exc)})
    return json_reply(404, {"error": f"no admin endpoint {method} {path}"})
