"""Version-1 events as an order system publishes them."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from typing import Any

_ids = itertools.count(1)


def _base(type_: str, order_ref: str, mobile: str, **fields: Any) -> dict[str, Any]:
    return {
        "event_id": fields.pop("event_id", f"evt-{type_}-{next(_ids)}"),
        "type": type_,
        "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
        "order_ref": order_ref,
        "customer": {"identifier_type": "mobile", "identifier_value": mobile},
        **fields,
    }


def coupon_redeemed(
    order_ref: str, redemption_id: int, mobile: str = "919800000001", **fields: Any
) -> dict[str, Any]:
    return _base("coupon.redeemed", order_ref, mobile, redemption_id=redemption_id, **fields)


def points_redeemed(
    order_ref: str,
    redemption_id: str,
    mobile: str = "919800000001",
    points: str = "10",
    **fields: Any,
) -> dict[str, Any]:
    return _base(
        "points.redeemed", order_ref, mobile, redemption_id=redemption_id, points=points, **fields
    )


def redeem_requested(
    order_ref: str, mobile: str = "919800000001", points: str = "25", **fields: Any
) -> dict[str, Any]:
    return _base("points.redeem_requested", order_ref, mobile, points=points, **fields)


def transaction_completed(
    order_ref: str, mobile: str = "919800000001", bill_number: str | None = None, **fields: Any
) -> dict[str, Any]:
    fields.setdefault("bill_id", 4242)
    fields.setdefault("bill_amount", "120.50")
    return _base(
        "transaction.completed",
        order_ref,
        mobile,
        bill_number=bill_number or f"BILL-{order_ref}",
        **fields,
    )


def body(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()
