"""Reading the platform's answer envelopes, shared by the three API areas.

Three shapes exist (DESIGN.md, "Envelopes"): v2 ``{"warnings": [], "errors": [{"code",
"message"}]}``, which may fail with HTTP 200; v1.1 ``{"response": {"status": {"code"}, ...}}``
with a per-item ``item_status``; and the rewards gateway's ``{"status": {"success", "code",
"message"}}``.
Codes may arrive as numbers or strings. The body decides, not the status line.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, NoReturn

from worker.loyalty.errors import ProtocolError, Rejected, Transient, is_transient_code

if TYPE_CHECKING:
    from worker.loyalty.exchange import Exchange


def as_int(value: Any) -> int | None:
    """A platform code or id as an int: numbers and numeric strings alike; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, Decimal):
        return int(value) if value.is_finite() and value == value.to_integral_value() else None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def as_decimal(value: Any) -> Decimal | None:
    """A number or numeric string as an exact Decimal; None when absent or not a number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def as_bool(value: Any) -> bool | None:
    """v1.1 sends booleans as the strings "true"/"false"; v2 as JSON booleans."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def is_envelope(body: Any) -> bool:
    """True when ``body`` is one of the platform's JSON envelopes (so the body, not the status
    line, says what happened)."""
    if not isinstance(body, dict):
        return False
    if isinstance(body.get("errors"), list) or isinstance(body.get("entity"), dict):
        return True
    response = body.get("response")
    if isinstance(response, dict) and isinstance(response.get("status"), dict):
        return True
    status = body.get("status")
    return isinstance(status, dict) and "code" in status


def expect_dict(body: Any, exchange: Exchange, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ProtocolError(f"expected a JSON object for {what}", exchange=exchange)
    return body


def refuse(code: int | None, message: str, exchange: Exchange) -> NoReturn:
    """Raise what a platform code means: ``Transient`` for DESIGN's transient codes (the platform
    answered that it did not do it, so not ambiguous), ``Rejected`` for every other code."""
    if is_transient_code(code):
        raise Transient(message, ambiguous=False, code=code, exchange=exchange)
    raise Rejected(code, message, exchange=exchange)


def raise_for_v2_errors(body: Any, exchange: Exchange) -> None:
    """Raise when a v2 body carries a non-empty ``errors`` list, whatever the HTTP status."""
    if not isinstance(body, dict):
        return
    errors = body.get("errors")
    if not isinstance(errors, list) or not errors:
        return
    entries = [entry for entry in errors if isinstance(entry, dict)]
    codes = [as_int(entry.get("code")) for entry in entries]
    message = "; ".join(str(entry.get("message") or "") for entry in entries).strip("; ")
    message = message or "the platform answered with errors"
    transient = next((code for code in codes if is_transient_code(code)), None)
    if transient is not None:
        refuse(transient, message, exchange)
    code = next((code for code in codes if code is not None), None)
    if code is None:
        raise ProtocolError(f"errors without a code: {message}", exchange=exchange)
    refuse(code, message, exchange)
