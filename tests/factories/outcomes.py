"""Outcome rows, as the reconciler would have recorded them."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from models.outcomes import Outcome

_ids = itertools.count(1)
NOW = dt.datetime(2026, 11, 21, 12, 0, tzinfo=dt.UTC)


def outcome_fields(**overrides: Any) -> dict[str, Any]:
    n = next(_ids)
    fields: dict[str, Any] = {
        "at": NOW,
        "kind": "coupon",
        "redemption_id": str(700000 + n),
        "order_ref": f"ORD-{n}",
        "bill_number": f"B-{n}",
        "bill_id": 900000 + n,
        "bill_amount": Decimal("12.50"),
        "customer": "919800000001",
        "attempt": 1,
        "http_status": 200,
        "code": 761,
        "message": "Redemption updated",
        "status": "succeeded",
        "event_id": f"evt-{n}",
        "request_id": f"req-{n}",
        "request_excerpt": '{"redemptions": [...]}',
        "response_excerpt": '{"response": {}}',
    }
    fields.update(overrides)
    return fields


def make_outcome(session: Session, **overrides: Any) -> Outcome:
    row = Outcome(**outcome_fields(**overrides))
    session.add(row)
    session.flush()
    return row


def make_outcomes(session: Session, count: int, **overrides: Any) -> None:
    """Many rows in one INSERT (no ORM objects), for volume tests."""
    session.execute(insert(Outcome), [outcome_fields(**overrides) for _ in range(count)])
