"""Which platform endpoint a method and path belong to."""

from __future__ import annotations

from sandbox.endpoint import Endpoint
from sandbox.handlers import coupons, oauth, points_redeem, points_update, vendor

ENDPOINTS: tuple[Endpoint, ...] = (
    coupons.ENDPOINT,
    points_update.ENDPOINT,
    points_redeem.ENDPOINT,
    vendor.ENDPOINT,
    oauth.ENDPOINT,
)


def find(method: str, path: str) -> tuple[Endpoint | None, dict[str, str], list[str]]:
    """(endpoint, path parameters, methods the path allows); endpoint None if no method matched."""
    allowed = []
    for endpoint in ENDPOINTS:
        match = endpoint.pattern.match(path)
        if match:
            if endpoint.method == method:
                return endpoint, match.groupdict(), [method]
            allowed.append(endpoint.method)
    return None, {}, allowed
