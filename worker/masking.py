"""Keep credentials out of logs and the audit trail.

Everything the client records (request and response excerpts, log lines) passes through here.
Keys are matched case-insensitively; every value inside an ``apiHeaders`` object is hidden, because
a vendor configuration carries the vendor's own credentials there under any header name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from typing import Any

from worker.loyalty import jsoncodec

MASK = "***"
EXCERPT_LIMIT = 2000

#: keys whose value is always hidden (lower case).
SENSITIVE_KEYS = frozenset(
    {
        "authorization",
        "password",
        "secret",
        "token",
        "accesstoken",
        "access_token",
        "x-cap-api-oauth-token",
        "key",
        "client_secret",
        "cookie",
        "set-cookie",
    }
)
#: keys whose whole object is hidden value by value (the keys stay, for readability).
SENSITIVE_CONTAINERS = frozenset({"apiheaders"})

# For text that is not JSON (an XML 401 body, a truncated answer): hide credential-looking values.
_TEXT_PATTERNS = (
    re.compile(r"(?i)\b(basic|bearer)\s+[A-Za-z0-9+/=._~-]{6,}"),
    re.compile(
        r"(?i)(\"?(?:password|secret|accesstoken|access_token|token|authorization"
        r"|x-cap-api-oauth-token)\"?\s*[:=]\s*)(\"[^\"]*\"|[^\s,&}<]+)"
    ),
)


def _is_sensitive(key: object) -> bool:
    return isinstance(key, str) and key.lower() in SENSITIVE_KEYS


def redact(obj: Any) -> Any:
    """A copy of ``obj`` with the values of sensitive keys replaced by ``***``.

    Strings that hold JSON (a vendor action's ``apiBody`` template) are redacted inside too.
    """
    if isinstance(obj, Mapping):
        copy: dict[Any, Any] = {}
        for key, value in obj.items():
            if _is_sensitive(key):
                copy[key] = MASK
            elif isinstance(key, str) and key.lower() in SENSITIVE_CONTAINERS:
                copy[key] = _mask_all(value)
            else:
                copy[key] = redact(value)
        return copy
    if isinstance(obj, list | tuple):
        return [redact(item) for item in obj]
    if isinstance(obj, str):
        return _redact_embedded_json(obj)
    return obj


def _mask_all(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: MASK for key in value}
    return MASK


def _redact_embedded_json(text: str) -> str:
    stripped = text.lstrip()
    if not stripped.startswith(("{", "[")):
        return text
    try:
        parsed = jsoncodec.loads(text)
    except ValueError:
        return redact_text(text)
    cleaned = redact(parsed)
    return text if cleaned == parsed else jsoncodec.dumps(cleaned)


def redact_text(text: str) -> str:
    """Hide credential-looking values in free text (``Basic xxx``, ``"password": "..."``)."""
    text = _TEXT_PATTERNS[0].sub(lambda m: f"{m.group(1)} {MASK}", text)
    return _TEXT_PATTERNS[1].sub(lambda m: f"{m.group(1)}{MASK}", text)


def excerpt(obj_or_text: Any, limit: int = EXCERPT_LIMIT) -> str:
    """Redacted text of a body, at most ``limit`` characters, for the audit trail and logs."""
    if obj_or_text is None:
        return ""
    if isinstance(obj_or_text, bytes):
        obj_or_text = obj_or_text.decode("utf-8", errors="replace")
    if isinstance(obj_or_text, str):
        try:
            parsed = jsoncodec.loads(obj_or_text)
        except ValueError:
            text = redact_text(obj_or_text)
        else:
            text = jsoncodec.dumps(redact(parsed))
    else:
        try:
            text = jsoncodec.dumps(redact(obj_or_text))
        except (TypeError, ValueError):
            text = redact_text(repr(obj_or_text))
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


def redact_event_dict(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: hide sensitive keys anywhere in the event before it is rendered."""
    cleaned: MutableMapping[str, Any] = redact(event_dict)
    return cleaned
