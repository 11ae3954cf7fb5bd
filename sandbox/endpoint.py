"""The two shapes every platform handler deals in: the parsed request, and the endpoint's
description (its route, how it says "no" in its own envelope, which customers it touches)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sandbox.replies import Reply

if TYPE_CHECKING:
    from sandbox.app import SandboxApp


class _NotJson:
    """The body was empty, not UTF-8 or not JSON (distinct from a JSON null)."""

    def __repr__(self) -> str:
        return "NOT_JSON"


NOT_JSON: Any = _NotJson()


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]  # case-insensitive (http.server's message object)
    body: Any  # parsed JSON (floats as Decimal), or NOT_JSON
    params: dict[str, str] = field(default_factory=dict)  # named groups of the route's pattern
    api_key: str | None = None  # set once authenticated


def nobody(body: Any) -> list[str]:
    return []


@dataclass(frozen=True)
class Endpoint:
    method: str
    name: str  # the stats key, e.g. "PUT /v2/coupon/redeem"
    pattern: re.Pattern[str]
    handle: Callable[[SandboxApp, Request], Reply]
    # How this endpoint answers a business error it did not compute itself (521, a scripted
    # code): (body, code, message) -> Reply in the endpoint's own envelope.
    refuse: Callable[[Any, int, str], Reply]
    # The customer keys a request works on; they are locked for its duration (code 521).
    customers: Callable[[Any], list[str]] = nobody
    authenticated: bool = True
    random_faults: bool = True
