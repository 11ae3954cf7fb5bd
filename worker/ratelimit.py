"""The platform's request budget, shared by every worker process on every host.

GCRA (the "generic cell rate algorithm") keeps one number per API key: the theoretical arrival
time (TAT) of the next request. A request is allowed when TAT is not further in the future than
the burst tolerance; allowing it moves TAT on by one emission interval. Deciding and moving is one
atomic upsert, so no two processes can spend the same slot. PostgreSQL's clock is the only clock,
so hosts whose clocks drift still agree.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Engine, text

from worker import metrics

_PG_TAKE = text("""
    INSERT INTO rate_limits AS r (key, tat)
    VALUES (:key, extract(epoch FROM clock_timestamp()) + :interval)
    ON CONFLICT (key) DO UPDATE
        SET tat = greatest(r.tat, extract(epoch FROM clock_timestamp())) + :interval
        WHERE greatest(r.tat, extract(epoch FROM clock_timestamp()))
              - extract(epoch FROM clock_timestamp()) <= :tolerance
    RETURNING tat
""")
_PG_WAIT = text(
    "SELECT tat - :tolerance - extract(epoch FROM clock_timestamp()) FROM rate_limits "
    "WHERE key = :key"
)
_SQLITE_TAKE = text("""
    INSERT INTO rate_limits AS r (key, tat) VALUES (:key, :now + :interval)
    ON CONFLICT (key) DO UPDATE
        SET tat = max(r.tat, :now) + :interval
        WHERE max(r.tat, :now) - :now <= :tolerance
    RETURNING tat
""")
_SQLITE_WAIT = text("SELECT tat - :tolerance - :now FROM rate_limits WHERE key = :key")


class Throttled(Exception):
    """The budget is spent for longer than is worth waiting in place; come back later."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limit reached; next slot in {retry_after:.2f} s")
        self.retry_after = retry_after


@dataclass
class GlobalRateLimiter:
    engine: Engine
    key: str
    per_minute: int
    burst: int = 1
    #: Waits up to this long in place; beyond it raises Throttled so the task gives its slot
    #: back to the queue instead of sleeping on it.
    max_wait_seconds: float = 2.0

    @property
    def interval(self) -> float:
        # A burst of b lets b requests go at once after a pause, so the steady rate is
        # (per_minute - b) per minute: no 60 s window can ever hold more than per_minute.
        steady = max(self.per_minute - (self.burst - 1), 1)
        return 60.0 / steady

    def try_acquire(self) -> float:
        """Take one slot if free: 0.0, else the seconds until one is."""
        params = {
            "key": self.key,
            "interval": self.interval,
            "tolerance": self.interval * (self.burst - 1),
        }
        postgres = self.engine.dialect.name == "postgresql"
        if not postgres:
            params["now"] = time.time()
        with self.engine.begin() as conn:
            taken = conn.execute(_PG_TAKE if postgres else _SQLITE_TAKE, params).first()
            if taken is not None:
                return 0.0
            wait = conn.execute(_PG_WAIT if postgres else _SQLITE_WAIT, params).scalar()
        return max(float(wait or 0.0), 0.001)

    def acquire(self) -> None:
        """Block until a slot is taken, or raise Throttled when that would take too long."""
        waited = 0.0
        while True:
            wait = self.try_acquire()
            if wait == 0.0:
                metrics.ratelimit_slot()
                return
            if waited + wait > self.max_wait_seconds:
                metrics.ratelimit_deferral()
                raise Throttled(wait)
            metrics.ratelimit_wait(wait)
            time.sleep(wait)
            waited += wait
