"""Completed bills, with the redemptions they list explicitly."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from models.transactions import Transaction, TransactionLink

_ids = itertools.count(1)


def make_transaction(
    session: Session, *, listed: Sequence[tuple[str, str]] = (), **overrides: Any
) -> Transaction:
    """A bill; ``listed`` is its explicit (kind, redemption_id) list."""
    n = next(_ids)
    fields: dict[str, Any] = {
        "event_id": f"evt-txn-{n}",
        "order_ref": f"TORD-{n}",
        "bill_number": f"TB-{n}",
        "customer_type": "mobile",
        "customer_value": "919800000004",
        "explicit": bool(listed),
        "created_at": dt.datetime.now(dt.UTC),
    }
    fields.update(overrides)
    row = Transaction(**fields)
    row.links = [TransactionLink(kind=kind, redemption_id=rid) for kind, rid in listed]
    session.add(row)
    session.flush()
    return row
