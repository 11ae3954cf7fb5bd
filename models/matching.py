"""How a redemption finds its bill: shared by the intake (an event arrives) and the reconcile step
(a points redeem creates a redemption).

A redemption belongs to a transaction when the transaction lists it explicitly, or else when their
``order_ref`` is equal (DESIGN.md, "Matching"). Whoever writes either side first locks the keys
both could match by, so two writers never miss each other's uncommitted row.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from models.redemptions import Redemption
from models.transactions import Transaction, TransactionLink

#: The advisory-lock key space of matching (worker/reconcile/locks.py uses 1 to 4).
_MATCH = 6
_LOCK_ALL = text(
    "SELECT count(pg_advisory_xact_lock(:space, hashtext(key)))"
    " FROM unnest(CAST(:keys AS text[])) AS key"
)


def lock_match_keys(session: Session, keys: Iterable[str]) -> None:
    """Serialise the transactions that could match the same redemption and bill.

    A redemption and its bill stored at the same moment by two intake consumers would each miss
    the other's uncommitted row and stay unlinked forever. Each transaction first takes
    transaction-scoped advisory locks on the keys it matches by (the order, and each explicitly
    listed redemption), in sorted order so two transactions never wait on each other in a
    circle; the second then reads what the first committed. SQLite (the one-process demo) has
    a single intake consumer and serialises writers anyway.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    ordered = sorted(set(keys))
    if not ordered:
        return
    # One round trip for any number of keys (an intake batch locks hundreds): unnest yields the
    # array's elements in order, and the function scan takes each lock as it reads the next.
    session.execute(_LOCK_ALL, {"space": _MATCH, "keys": ordered})


def attach_redemption(
    session: Session,
    *,
    kind: str,
    redemption_id: str | None,
    external_reference_number: str | None,
) -> Transaction | None:
    """Find the bill a redemption belongs to (listed explicitly, else its order's) and link it."""
    transaction = None
    if redemption_id is not None:
        transaction = session.scalars(
            select(Transaction)
            .join(TransactionLink)
            .where(TransactionLink.kind == kind, TransactionLink.redemption_id == redemption_id)
        ).first()
    identity = (
        Redemption.redemption_id == redemption_id
        if redemption_id is not None
        else Redemption.external_reference_number == external_reference_number
    )
    if transaction is None:
        # The bill of the redemption row's own order: when a second event names a redemption
        # already stored under another order, the row keeps its order (and an intake batch,
        # which links set-wise, ends the same way).
        transaction = session.scalars(
            select(Transaction)
            .join(Redemption, Redemption.order_ref == Transaction.order_ref)
            .where(Redemption.kind == kind, identity, Transaction.explicit.is_(False))
        ).first()
    if transaction is None:
        return None
    session.execute(
        update(Redemption)
        .where(Redemption.kind == kind, identity, Redemption.transaction_id.is_(None))
        .values(transaction_id=transaction.id)
    )
    return transaction
