"""Checking one vendor redemption configuration (seed 004): every problem at once.

A problem has a JSON-path-like location (``$.actions[1].execOrder``) and says what is wrong in
words a person can act on. It never quotes an ``apiHeaders`` value, an ``apiUrl`` or an
``apiBody``: those may carry the vendor's credentials.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeGuard
from urllib.parse import urlsplit

#: seed 004, "redemptionType".
REDEMPTION_TYPES = (
    "GAMES", "AUCTION", "CART_PROMOTION", "CASH_WALLET", "VENDOR_ONLY_REWARD", "VOUCHER",
    "CASH_BACK", "INTOUCH_REWARD", "PHYSICAL_REWARD", "CHARITY", "MILES", "GIFT_CARD",
    "SWEEPSTAKES", "VENDOR_INTOUCH_REWARD", "CARD_DISC",
)  # fmt: skip
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
#: Our addressing: which configuration, of which brand. Not part of the body sent.
ADDRESS_KEYS = ("id", "brandId")
#: seed 004's request body. Anything else is refused, so a misspelt key is not silently dropped.
BODY_KEYS = ("name", "redemptionType", "actions", "responseKeys", "vendorId", "enabled")
ACTION_KEYS = (
    "apiUrl", "apiBodyField", "apiBody", "name", "execOrder", "apiType", "retryAction",
    "actionId", "enabled", "apiHeaders", "contextKeys",
)  # fmt: skip

#: What the platform fills in a body template: ${...} variables, custom fields, and two names.
PLACEHOLDER = re.compile(
    r"\$\{(?P<var>[^{}\"\\\s]*)\}|\bcustomfield_\w+|\bfulfillmentStatus\b|\brewardTransactionId\b"
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Problem:
    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class _Problems(list[Problem]):
    def add(self, location: str, message: str) -> None:
        self.append(Problem(location, message))


def check_document(document: Any, *, default_brand_id: int | None) -> list[Problem]:
    """Every problem of one parsed file (empty when it can be sent)."""
    problems = _Problems()
    if not isinstance(document, dict):
        problems.add("$", f"must be a JSON object, not {_json_type(document)}")
        return problems
    _refuse_unknown_keys(document, "$", BODY_KEYS + ADDRESS_KEYS, problems)

    _check_id(document, "id", problems)
    if "brandId" in document:
        _check_id(document, "brandId", problems)
    elif default_brand_id is None:
        problems.add(
            "$.brandId", "is missing: set it in the file, pass --brand-id or set LOYALTY_BRAND_ID"
        )
    _check_type(document, "$", "name", str, problems)
    _check_type(document, "$", "enabled", bool, problems)
    _check_choice(document, "$", "redemptionType", REDEMPTION_TYPES, problems)

    vendor_id = document.get("vendorId")
    if "vendorId" not in document:
        problems.add("$.vendorId", "is missing: the vendor's id is required")
    elif not isinstance(vendor_id, str):
        problems.add("$.vendorId", f"must be a non-empty string, not {_json_type(vendor_id)}")
    elif not vendor_id.strip():
        problems.add("$.vendorId", "is empty: the vendor's id is required")

    response_keys = _response_keys(document, problems)
    actions = document.get("actions")
    if not isinstance(actions, list) or not actions:
        state = "is missing" if actions is None else f"is {_json_type(actions, empty=True)}"
        problems.add("$.actions", f"{state}: a non-empty list of actions is required")
        return problems
    first_with_order: dict[int, int] = {}
    for index, action in enumerate(actions):
        _check_action(action, f"$.actions[{index}]", response_keys, problems)
        order = action.get("execOrder") if isinstance(action, dict) else None
        if not _is_int(order):
            continue
        if order in first_with_order:
            problems.add(
                f"$.actions[{index}].execOrder",
                f"{order} is also the execOrder of actions[{first_with_order[order]}]",
            )
        else:
            first_with_order[order] = index
    return problems


def _check_action(action: Any, where: str, response_keys: set[str], problems: _Problems) -> None:
    if not isinstance(action, dict):
        problems.add(where, f"must be an object, not {_json_type(action)}")
        return
    _refuse_unknown_keys(action, where, ACTION_KEYS, problems)
    url = action.get("apiUrl")
    if not isinstance(url, str):
        state = "is missing" if url is None else f"is {_json_type(url)}"
        problems.add(f"{where}.apiUrl", f"{state}: the vendor endpoint's https URL is required")
    else:
        _check_url(url, f"{where}.apiUrl", problems)
    _check_choice(action, where, "apiType", HTTP_METHODS, problems)

    order = action.get("execOrder")
    if not _is_int(order):
        state = "is missing" if order is None else f"is {_json_type(order)}"
        problems.add(f"{where}.execOrder", f"{state}: an integer execution order is required")
    if "apiBody" not in action:
        problems.add(f"{where}.apiBody", "is missing: the body template is required")
    for name in ("apiBody", "apiBodyField"):
        if name in action:
            _check_template(action[name], f"{where}.{name}", problems)
    _check_type(action, where, "name", str, problems)
    _check_type(action, where, "retryAction", bool, problems)
    _check_type(action, where, "enabled", bool, problems)
    if "actionId" in action and not _is_int(action["actionId"]):
        problems.add(
            f"{where}.actionId", f"must be an integer, not {_json_type(action['actionId'])}"
        )
    _check_headers(action.get("apiHeaders"), f"{where}.apiHeaders", problems)
    _check_context_keys(action.get("contextKeys"), f"{where}.contextKeys", response_keys, problems)


def _check_headers(headers: Any, where: str, problems: _Problems) -> None:
    if headers is None:
        return
    if not isinstance(headers, dict):
        problems.add(
            where, f"must be an object of header names to strings, not {_json_type(headers)}"
        )
        return
    for name, value in headers.items():
        # The header is named, its value never is: it is usually a credential.
        if not name.strip():
            problems.add(where, "has a header with an empty name")
        elif not isinstance(value, str):
            problems.add(_child(where, name), f"must be a string, not {_json_type(value)}")


def _check_context_keys(
    context: Any, where: str, response_keys: set[str], problems: _Problems
) -> None:
    if context is None:
        return
    if not isinstance(context, dict):
        problems.add(where, f"must be an object, not {_json_type(context)}")
        return
    declared = ", ".join(sorted(response_keys)) or "none declared"
    for name, path in context.items():
        if name not in response_keys:
            problems.add(_child(where, name), f"is not one of responseKeys ({declared})")
        if not isinstance(path, str) or not path.strip():
            problems.add(_child(where, name), "must be a non-empty string: where to read it")


def _check_url(url: str, where: str, problems: _Problems) -> None:
    try:
        parts = urlsplit(url)
        host = parts.hostname
        has_credentials = parts.username is not None or parts.password is not None
    except ValueError:
        problems.add(where, "is not a valid URL")
        return
    if parts.scheme != "https":
        problems.add(where, f"must be an https URL (its scheme is {parts.scheme or 'missing'})")
    if not host:
        problems.add(where, "has no host name")
    if has_credentials:
        problems.add(where, "must not carry credentials: put them in apiHeaders")


def _check_template(template: Any, where: str, problems: _Problems) -> None:
    """The body template must be JSON text once the platform has filled its placeholders."""
    if not isinstance(template, str):
        problems.add(where, f"must be a string holding a JSON template, not {_json_type(template)}")
        return
    for match in PLACEHOLDER.finditer(template):
        if match.group("var") is not None and not match.group("var").strip():
            problems.add(where, f"has an empty placeholder at {_position(template, match.start())}")
    # Each placeholder becomes as many "1"s as it has characters: valid inside a JSON string and
    # as a bare number alike, and the parser's line and column still point into the template.
    filled = PLACEHOLDER.sub(lambda match: "1" * len(match.group(0)), template)
    if "${" in filled:
        at = _position(template, filled.index("${"))
        problems.add(where, f"has a placeholder opened at {at} and never closed")
        return
    try:
        json.loads(filled)
    except json.JSONDecodeError as exc:
        at = f"line {exc.lineno}, column {exc.colno}"
        problems.add(
            where, f"is not valid JSON once its placeholders are filled: {exc.msg} at {at}"
        )


def _check_id(document: dict[str, Any], key: str, problems: _Problems) -> None:
    value = document.get(key)
    if value is None:
        problems.add(f"$.{key}", "is missing: the vendor redemption id, a positive integer")
    elif not _is_int(value) or value <= 0:
        problems.add(f"$.{key}", f"must be a positive integer, not {_show(value)}")


def _check_choice(
    document: dict[str, Any], where: str, key: str, choices: tuple[str, ...], problems: _Problems
) -> None:
    value = document.get(key)
    if value not in choices:
        state = "is missing" if value is None else f"{_show(value)} is not documented"
        problems.add(_child(where, key), f"{state} (one of: {', '.join(choices)})")


def _check_type(
    document: dict[str, Any], where: str, key: str, kind: type, problems: _Problems
) -> None:
    if key in document and not isinstance(document[key], kind):
        expected = "a boolean" if kind is bool else "a string"
        problems.add(_child(where, key), f"must be {expected}, not {_json_type(document[key])}")


def _refuse_unknown_keys(
    document: dict[str, Any], where: str, known: Iterable[str], problems: _Problems
) -> None:
    names = tuple(known)
    for key in document:
        if key not in names:
            problems.add(_child(where, key), f"is not a known field (known: {', '.join(names)})")


def _response_keys(document: dict[str, Any], problems: _Problems) -> set[str]:
    keys = document.get("responseKeys")
    if keys is None:
        return set()
    if not isinstance(keys, list):
        problems.add("$.responseKeys", f"must be a list of strings, not {_json_type(keys)}")
        return set()
    names = set()
    for index, key in enumerate(keys):
        if isinstance(key, str) and key.strip():
            names.add(key)
        else:
            problems.add(f"$.responseKeys[{index}]", "must be a non-empty string")
    return names


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _child(where: str, key: str) -> str:
    return f"{where}.{key}" if _IDENTIFIER.match(key) else f"{where}[{json.dumps(key)}]"


def _position(text: str, offset: int) -> str:
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"line {line}, column {column}"


def _show(value: Any) -> str:
    """A short JSON rendering of a value that is not a secret (a type name, a method, an id)."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _json_type(value: Any, *, empty: bool = False) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "empty" if empty and not value else "an array"
    return "an object"
