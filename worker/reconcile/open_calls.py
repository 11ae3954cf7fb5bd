"""How many platform calls the open work still needs: the demand the budget weighs to decide
whether live work is paced ("Even once saturated" in ``worker/budget/postgres.py``).

Counted from the work itself, not from tasks: an order can have two tasks queued for the same
call (its bill's and the one its points redeem sends on), and counting tasks took one call for
two. One call per points redemption to update, one coupon call per customer and bill (all of a
customer's coupons on a bill go in one call), one call per points redeem still to make. Work in
flight has its slot already and is not counted.

Each count stops at ``cap``: the budget only asks whether more waits than one turn of its ring
serves, so the work is bounded by the ring's size, not by the backlog's. The coupons' count reads
at most ``COUPON_ROWS_PER_CALL`` rows per call it may count (a DISTINCT reads every row it is
given before its LIMIT applies); a backlog whose customers have more coupons than that on one
bill is undercounted, which only delays the pacing.

Re-driven work (the backfill, the sweeper) is open work too and is counted: a live request
during a backfill larger than a turn paces live work, at the limit's average rate.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

#: States of work that still needs its call (``models/redemptions.py``).
_WAITING = "('pending', 'retrying')"
#: Coupon rows read per call the count may reach (see above).
COUPON_ROWS_PER_CALL = 4

_OPEN_CALLS = text(f"""
    SELECT
        (SELECT count(*) FROM (
            SELECT 1 FROM redemptions
            WHERE state IN {_WAITING} AND transaction_id IS NOT NULL AND kind = 'points'
            LIMIT :cap) AS points_updates)
      + (SELECT count(*) FROM (
            SELECT DISTINCT transaction_id, customer_type, customer_value FROM (
                SELECT transaction_id, customer_type, customer_value FROM redemptions
                WHERE state IN {_WAITING} AND transaction_id IS NOT NULL AND kind = 'coupon'
                LIMIT :coupon_rows) AS coupons
            LIMIT :cap) AS coupon_calls)
      + (SELECT count(*) FROM (
            SELECT 1 FROM points_redeem_requests WHERE state IN {_WAITING}
            LIMIT :cap) AS points_redeems)
""")


def open_calls(conn: Connection, cap: int) -> int:
    """The calls open work still needs, counting each kind up to ``cap``."""
    params = {"cap": cap, "coupon_rows": cap * COUPON_ROWS_PER_CALL}
    return int(conn.execute(_OPEN_CALLS, params).scalar() or 0)
