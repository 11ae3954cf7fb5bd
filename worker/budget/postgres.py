"""The budget's rule as PostgreSQL statements: the ring of slots in ``rate_limit_slots``, the pause
and the "live work waited" mark in ``rate_limits``, shared by every process on every host.

Every statement reads the database's clock, so hosts with drifting clocks still agree.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from models.session import driver_sql
from worker.budget.rule import (
    LIVE,
    MAX_DEFERRAL_SECONDS,
    REDRIVE,
    Budget,
    Ring,
    redrive_wait,
)

_NOW = "(SELECT t FROM now)"
# The rows go in with one statement, so the last slot stands for all of them: a process that
# starts finds them with one index lookup instead of re-inserting the whole ring (100,000 rows at
# the highest limit, seconds of PostgreSQL's time for every pool process that starts).
_PG_HAS_RING = text(
    "SELECT EXISTS (SELECT 1 FROM rate_limit_slots WHERE key = :key AND slot = :last)"
)
_PG_ENSURE = text("""
    INSERT INTO rate_limit_slots (key, slot, used_at, redriven)
    SELECT :key, g, 0, false FROM generate_series(0, :size - 1) AS g
    ON CONFLICT (key, slot) DO NOTHING
""")
_PG_PAUSE = text("""
    INSERT INTO rate_limits AS r (key, paused_until)
    VALUES (:key, extract(epoch FROM clock_timestamp()) + :pause)
    ON CONFLICT (key) DO UPDATE
        SET paused_until = greatest(coalesce(r.paused_until, 0), excluded.paused_until)
""")
_PG_PAUSED_FOR = text(
    "SELECT paused_until - extract(epoch FROM clock_timestamp()) FROM rate_limits WHERE key = :key"
)
_PG_LIVE_WAITED = text("""
    INSERT INTO rate_limits AS r (key, live_waited_at)
    VALUES (:key, extract(epoch FROM clock_timestamp()))
    ON CONFLICT (key) DO UPDATE SET live_waited_at = excluded.live_waited_at
""")
# rule.spread as one atomic upsert: two processes never get the same return time.
_NEXT_FREE = """(SELECT min(s.used_at) + :window FROM rate_limit_slots s
                 WHERE s.key = :key AND s.slot < :size
                   AND s.used_at > r.deferred_until - :window)"""
_RETURN_AT = f"""least(
        greatest(excluded.deferred_until, coalesce({_NEXT_FREE}, r.deferred_until + :spacing)),
        extract(epoch FROM clock_timestamp()) + :max_wait)"""
_PG_DEFER = text(f"""
    INSERT INTO rate_limits AS r (key, deferred_until)
    VALUES (:key, extract(epoch FROM clock_timestamp()) + :wait)
    ON CONFLICT (key) DO UPDATE SET deferred_until = {_RETURN_AT}
    RETURNING deferred_until - extract(epoch FROM clock_timestamp())
""")
# Even once saturated: with more open work than a turn serves, live work is paced at the
# limit's average rate for two turns (``paced_until``), and again while the backlog lasts. Paced
# from the moment the open work is known, the ring fills evenly; paced only once it was full, it
# replayed the uneven turn it filled in (a backlog's first calls come while the intake is still
# storing it, slower than the ones after) for a whole turn, and every window holding that turn's
# slow stretch came short. A pace already running is left as it is, so the turn it re-stamps is
# not cut short.
_PG_PACE = text("""
    INSERT INTO rate_limits AS r (key, paced_until)
    SELECT :key, greatest(s.newest, extract(epoch FROM clock_timestamp())) + 2 * :window
    FROM (SELECT coalesce((SELECT used_at FROM rate_limit_slots WHERE key = :key AND slot < :size
                           ORDER BY used_at DESC LIMIT 1), 0) AS newest) AS s
    ON CONFLICT (key) DO UPDATE SET paced_until = excluded.paced_until
    WHERE coalesce(r.paced_until, 0) <= extract(epoch FROM clock_timestamp())
""")
_PG_COULD_PACE = text("""
    SELECT NOT EXISTS (SELECT 1 FROM rate_limits r WHERE r.key = :key
                       AND r.paced_until > extract(epoch FROM clock_timestamp()))
""")
_PG_RING_WAIT = text("""
    SELECT used_at + :window - extract(epoch FROM clock_timestamp()) FROM rate_limit_slots
    WHERE key = :key AND slot < :size ORDER BY used_at OFFSET :skip LIMIT 1
""")
# NULL (no wait) unless the key is paced: a take that lost a race for a free slot is tried
# again at once, not a pace interval later.
_PG_PACE_WAIT = text("""
    SELECT used_at + :pace_window - extract(epoch FROM clock_timestamp()) FROM rate_limit_slots
    WHERE key = :key AND slot < :size AND NOT redriven
      AND EXISTS (SELECT 1 FROM rate_limits d
                  WHERE d.key = :key AND d.paced_until > extract(epoch FROM clock_timestamp()))
    ORDER BY used_at DESC OFFSET :pace_size - 1 LIMIT 1
""")
_PG_REDRIVE_STATE = text("""
    WITH now AS (SELECT extract(epoch FROM clock_timestamp()) AS t)
    SELECT
        EXISTS (SELECT 1 FROM rate_limits l
                WHERE l.key = :key AND l.live_waited_at > (SELECT t FROM now) - :window),
        count(*) FILTER (WHERE redriven),
        min(used_at) FILTER (WHERE redriven) - (SELECT t FROM now),
        count(*) FILTER (WHERE used_at > (SELECT t FROM now) - :pace_window)
    FROM rate_limit_slots
    WHERE key = :key AND slot < :size AND used_at > (SELECT t FROM now) - :window
""")
_take_statements: dict[tuple[int, bool], str] = {}


def _recent(condition: str, cap: str) -> str:
    """How many of the main ring's slots meet ``condition``, counted up to ``cap``: newest
    first down the ``(key, used_at)`` index, stopping at the cap. Written as a plain count, the
    planner, not knowing the time the statement computes, took the primary key instead and
    read every slot of the ring: 42 ms a take on a 30,000-slot ring against 0.8 ms."""
    return f"""(SELECT count(*) FROM (SELECT 1 FROM rate_limit_slots r
                 WHERE r.key = :k0 AND r.slot < :n0 AND {condition}
                 ORDER BY r.used_at DESC LIMIT {cap}) AS recent)"""


def _take_statement(rings: int, redrive: bool) -> str:
    """One statement: pick a free slot in every ring, stamp them all only if all were found. Sent
    for every call, so built once per shape as the driver's SQL (``driver_sql``)."""
    cached = _take_statements.get((rings, redrive))
    if cached is not None:
        return cached
    picks = [
        f"""r{i} AS (
            SELECT key, slot FROM rate_limit_slots
            WHERE key = :k{i} AND slot < :n{i} AND used_at <= {_NOW} - :w{i}
            ORDER BY used_at LIMIT 1 FOR UPDATE SKIP LOCKED)"""
        for i in range(rings)
    ]
    chosen = " UNION ALL ".join(f"SELECT key, slot FROM r{i}" for i in range(rings))
    gate = [
        f"(SELECT count(*) FROM chosen) = {rings}",
        f"""NOT EXISTS (SELECT 1 FROM rate_limits p
                        WHERE p.key = :k0 AND p.paused_until > {_NOW})""",
    ]
    if not redrive:
        # Even once saturated: while the ring is paced (``paced_until``: more calls were open
        # than a turn serves), live work too is paced. Only live takes count
        # against its pace: re-driven work is paced already, and a backfill must not slow live
        # orders down.
        gate += [
            f"""(NOT EXISTS (SELECT 1 FROM rate_limits d
                             WHERE d.key = :k0 AND d.paced_until > {_NOW})
                 OR {
                _recent("NOT r.redriven AND r.used_at > " + _NOW + " - :pace_window", ":pace_size")
            } < :pace_size)"""
        ]
    if redrive:
        gate += [
            # Leave the reserve free for live work.
            f"""EXISTS (SELECT 1 FROM rate_limit_slots f
                        WHERE f.key = :k0 AND f.slot < :n0 AND f.used_at <= {_NOW} - :w0
                        OFFSET :reserve LIMIT 1)""",
            # Paced: everyone together below the average rate over the last second or so.
            f"""{_recent("r.used_at > " + _NOW + " - :pace_window", ":pace_size")}
                < :pace_size""",
            # In a window where live work waited, stay within the share.
            f"""(NOT EXISTS (SELECT 1 FROM rate_limits l
                             WHERE l.key = :k0 AND l.live_waited_at > {_NOW} - :w0)
                 OR {_recent("r.redriven AND r.used_at > " + _NOW + " - :w0", ":quota")}
                    < :quota)""",
        ]
    statement = text(f"""
        WITH now AS (SELECT extract(epoch FROM clock_timestamp()) AS t),
        {", ".join(picks)},
        chosen AS ({chosen}),
        gate AS (SELECT ({" AND ".join(gate)}) AS ok)
        UPDATE rate_limit_slots s SET used_at = {_NOW}, redriven = :redriven
        FROM chosen, gate
        WHERE gate.ok AND s.key = chosen.key AND s.slot = chosen.slot
        RETURNING s.key
    """)
    compiled = driver_sql(statement)
    _take_statements[(rings, redrive)] = compiled
    return compiled


def take(conn: Connection, rings: list[Ring], tier_name: str, budget: Budget) -> bool:
    redrive = tier_name == REDRIVE
    params: dict[str, object] = {"redriven": redrive}
    for i, ring in enumerate(rings):
        params.update({f"k{i}": ring.key, f"n{i}": ring.size, f"w{i}": ring.window})
    params.update({"pace_window": budget.pace_window, "pace_size": budget.pace_size})
    if redrive:
        params.update({"reserve": budget.reserve, "quota": budget.redrive_quota})
    return bool(conn.exec_driver_sql(_take_statement(len(rings), redrive), params).first())


def wait(
    conn: Connection, rings: list[Ring], tier_name: str, budget: Budget
) -> tuple[float, bool] | None:
    """(seconds until the refused request may be granted, paused after a 429); None when a
    ring has no rows."""
    paused = conn.execute(_PG_PAUSED_FOR, {"key": rings[0].key}).scalar()
    if paused is not None and paused > 0:
        return float(paused), True
    waits = []
    for i, ring in enumerate(rings):
        skip = budget.reserve if tier_name == REDRIVE and i == 0 else 0
        params = {"key": ring.key, "size": ring.size, "window": ring.window, "skip": skip}
        wait = conn.execute(_PG_RING_WAIT, params).scalar()
        if wait is None:
            return None
        waits.append(float(wait))
    wait = max(waits)
    if tier_name == LIVE:
        conn.execute(_PG_LIVE_WAITED, {"key": rings[0].key})
        if wait <= 0:
            # A slot is free, so the pace refused it (or another process took the slot first):
            # wait until the pace lets the next one through, to the millisecond, so the paced
            # rate is the ring's own.
            pace = {"key": rings[0].key, "size": rings[0].size, "pace_size": budget.pace_size}
            wait = float(
                conn.execute(_PG_PACE_WAIT, pace | {"pace_window": budget.pace_window}).scalar()
                or 0.0
            )
    elif wait <= 0:
        main = rings[0]
        params = {
            "key": main.key,
            "size": main.size,
            "window": main.window,
            "pace_window": budget.pace_window,
        }
        live_waited, redriven, oldest, paced = conn.execute(_PG_REDRIVE_STATE, params).one()
        wait = redrive_wait(budget, main, live_waited, redriven, oldest, paced)
    # A slot was free but another process took it first: try again very soon.
    return max(wait, 0.005), False


def defer(conn: Connection, main: Ring, wait: float, spacing: float) -> float:
    """Hand out the next return time of a refused request: seconds from now."""
    params = {
        "key": main.key,
        "size": main.size,
        "window": main.window,
        "wait": wait,
        "spacing": spacing,
        "max_wait": MAX_DEFERRAL_SECONDS,
    }
    return max(float(conn.execute(_PG_DEFER, params).scalar() or wait), 0.005)


def could_pace(conn: Connection, main: Ring) -> bool:
    """No pace runs: only then is the open work worth counting."""
    return bool(conn.execute(_PG_COULD_PACE, {"key": main.key}).scalar())


def pace(conn: Connection, main: Ring) -> None:
    """Pace live work for two turns if no pace runs; a running pace is left as it is (more open
    work than a turn serves is the caller's to know)."""
    conn.execute(_PG_PACE, {"key": main.key, "size": main.size, "window": main.window})


def ensure(conn: Connection, ring: Ring) -> None:
    """The ring's rows exist (idempotent)."""
    if conn.execute(_PG_HAS_RING, {"key": ring.key, "last": ring.size - 1}).scalar():
        return
    inserted = conn.execute(_PG_ENSURE, {"key": ring.key, "size": ring.size}).rowcount
    if inserted:
        # A new table's first statistics wait for autovacuum, which a busy start (a backlog
        # being stored) can delay for minutes. The take's counts are written to use the
        # (key, used_at) index without them (``_recent``); the rest of the ring's statements
        # are planned better with them. Only the process that inserted the rows asks.
        conn.execute(text("ANALYZE rate_limit_slots"))


def pause(conn: Connection, key: str, seconds: float) -> None:
    """No process takes a slot on ``key`` for ``seconds`` (a longer pause already set stays)."""
    conn.execute(_PG_PAUSE, {"key": key, "pause": seconds})


def paused_for(conn: Connection, key: str) -> float:
    left = conn.execute(_PG_PAUSED_FOR, {"key": key}).scalar()
    return max(float(left or 0.0), 0.0)
