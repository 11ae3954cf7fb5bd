"""How many platform calls the open work still needs: the demand the budget weighs when its ring
is full ("Even once saturated" in ``worker/budget/limiter.py``).

Counted from the work itself, not from tasks: an order can have two tasks queued for the same
call (its bill's and the one its points redeem sends on), and counting tasks took one call for
two. One call per points redemption to update, one coupon call per bill (every coupon of a bill
goes in one call), one call per points redeem still to make. Work in flight has its slot
already and is not counted.

Each count stops at ``cap``: the budget only asks whether more waits than one turn of its ring
serves, so the work is bounded by the ring's size, not by the backlog's.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

#: States of work that still needs its call (``models/redemptions.py``).
_WAITING = "('pending', 'retrying')"

_OPEN_CALLS = text(f"""
    SELECT
        (SELECT count(*) FROM (
            SELECT 1 FROM redemptions
            WHERE state IN {_WAITING} AND transaction_id IS NOT NULL AND kind = 'points'
            LIMIT :cap) AS points_updates)
      + (SELECT count(*) FROM (
            SELECT DISTINCT transaction_id FROM redemptions
            WHERE state IN {_WAITING} AND transaction_id IS NOT NULL AND kind = 'coupon'
            LIMIT :cap) AS coupon_bills)
      + (SELECT count(*) FROM (
            SELECT 1 FROM points_redeem_requests WHERE state IN {_WAITING}
            LIMIT :cap) AS points_redeems)
""")


def open_calls(conn: Connection, cap: int) -> int:
    """The calls open work still needs, counting each kind up to ``cap``."""
    return int(conn.execute(_OPEN_CALLS, {"cap": cap}).scalar() or 0)
