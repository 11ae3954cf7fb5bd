"""Redemptions waiting for a bill, and points redeem requests."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from sqlalchemy.orm import Session

from models.redemptions import PointsRedeemRequest, Redemption

_ids = itertools.count(1)


def make_redemption(session: Session, **overrides: Any) -> Redemption:
    n = next(_ids)
    fields: dict[str, Any] = {
        "kind": "coupon",
        "redemption_id": str(800000 + n),
        "order_ref": f"RORD-{n}",
        "customer_type": "mobile",
        "customer_value": "919800000002",
        "event_id": f"evt-red-{n}",
        "created_at": dt.datetime.now(dt.UTC),
    }
    fields.update(overrides)
    row = Redemption(**fields)
    session.add(row)
    session.flush()
    return row


def make_redeem_request(session: Session, **overrides: Any) -> PointsRedeemRequest:
    n = next(_ids)
    fields: dict[str, Any] = {
        "event_id": f"evt-prr-{n}",
        "external_reference_number": f"recon-{n:08d}",
        "order_ref": f"PORD-{n}",
        "customer_type": "mobile",
        "customer_value": "919800000003",
        "points_text": "25.5",
        "state": "pending",
    }
    fields.update(overrides)
    row = PointsRedeemRequest(**fields)
    session.add(row)
    session.flush()
    return row
