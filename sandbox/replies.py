"""What an answer is, and the envelopes the platform wraps answers in.

Handlers return a ``Reply``; only ``server.py`` turns it into bytes on the socket, so the
pipeline can swap an answer for "close the connection" (drop / lost faults) after the fact.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from http import HTTPStatus
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    # "dropped" or "lost": close the connection without writing anything.
    hang_up: str | None = None


DROPPED = Reply(0, hang_up="dropped")
LOST = Reply(0, hang_up="lost")


def _decimal_to_json(value: Any) -> Any:
    # Bodies are parsed with Decimal (exact points, decimal places as written); send them back
    # as plain JSON numbers.
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":"), default=_decimal_to_json).encode()


def json_reply(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, to_json(payload), "application/json", headers)


def text_reply(status: int, text: str, content_type: str = "text/plain; charset=utf-8") -> Reply:
    return Reply(status, text.encode(), content_type)


def v2_errors(code: int, message: str, status: int = 200) -> Reply:
    """The v2 error envelope. The platform sends it with HTTP 200 for business errors."""
    errors = [{"status": False, "code": code, "message": message}]
    return json_reply(status, {"warnings": [], "errors": errors})


# The real platform answers 401 in XML even on JSON endpoints; clients must not choke on it.
_UNAUTHORIZED_XML = (
    '<?xml version="1.0" encoding="UTF-8"?><response><status><success>false</success>'
    "<code>401</code><message>Unauthorized</message></status></response>"
)
UNAUTHORIZED = Reply(401, _UNAUTHORIZED_XML.encode(), "application/xml")


def throttled(retry_after: int) -> Reply:
    body = {"status": {"success": False, "code": 429, "message": "Too many requests"}}
    return json_reply(429, body, (("Retry-After", str(retry_after)),))


def gateway_error(status: int) -> Reply:
    """A failure from the platform's front door: HTML or text, never the JSON contract."""
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    if status in (502, 504):
        title = f"{status} {phrase}"
        html = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
        return text_reply(status, html, "text/html; charset=utf-8")
    return text_reply(status, f"{status} {phrase}")
