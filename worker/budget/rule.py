"""The rule of the request budget: how one API key's budget is spent, as plain arithmetic.

The limiter (``limiter.py``) applies it with PostgreSQL (``postgres.py``) across every process, or
in memory (``memory.py``) in the one-process demo; both ask the same questions of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

LIVE = "live"
REDRIVE = "redrive"
TIERS = (LIVE, REDRIVE)
#: The platform's window. A parameter of the limiter so tests can shrink it.
WINDOW_SECONDS = 60.0


@dataclass(frozen=True)
class Ring:
    key: str
    size: int
    window: float


@dataclass(frozen=True)
class Budget:
    """How one key's budget is spent: the limit, the burst, the share of re-driven work."""

    per_minute: int
    burst: int | None = None
    redrive_share: float = 0.5
    window: float = WINDOW_SECONDS
    guard_seconds: float = 0.25

    @property
    def burst_size(self) -> int:
        return min(self.burst or self.per_minute, self.per_minute)

    @property
    def redrive_quota(self) -> int:
        """Slots re-driven work may hold in a window in which live work had to wait."""
        return math.floor(self.per_minute * self.redrive_share)

    @property
    def reserve(self) -> int:
        """Free slots re-driven work always leaves to live work (1 % of the budget, at least 1)."""
        return min(max(1, self.per_minute // 100), self.per_minute - 1)

    def rings(self, key: str, tier_name: str) -> list[Ring]:
        """The rings a request of ``tier_name`` takes one slot from, main ring first."""
        rings = [Ring(key, self.per_minute, self.window + self.guard_seconds)]
        if self.burst_size < self.per_minute:
            size = self.burst_size
            rings.append(Ring(f"{key}/burst", size, self.window * size / self.per_minute))
        return rings

    @property
    def slot_interval(self) -> float:
        """The average time between two slots coming free in a saturated ring: how far apart
        deferred requests are given their return times."""
        return self.window / self.per_minute

    @property
    def pace_size(self) -> int:
        """Re-driven work is paced: it takes a slot only while everyone together used fewer
        than this many in the last ``pace_window`` (one second's worth of the average rate).
        So the window fills no faster than it drains, and live work arriving during a backfill
        finds slots all the time, not only when the first minute's slots come free."""
        return max(1, min(self.burst_size, self.per_minute // 60))

    @property
    def pace_window(self) -> float:
        return self.window * self.pace_size / self.per_minute


#: A deferral is never longer than this (RabbitMQ's consumer_timeout bounds a held message);
#: past it the spreading gives up and the request comes back then.
MAX_DEFERRAL_SECONDS = 600.0


def spread(
    horizon: float | None, now: float, wait: float, next_free: float | None, spacing: float
) -> float:
    """The next return time handed out: when a slot may free (``wait`` from ``now``), but after
    the last one handed out (``horizon``): at the next slot expiry after it (``next_free``), or a
    slot's ``spacing`` later when every slot's expiry is spoken for."""
    earliest = now + wait
    if horizon is None:
        return earliest
    step = next_free if next_free is not None else horizon + spacing
    return min(max(earliest, step), now + MAX_DEFERRAL_SECONDS)


def redrive_wait(
    budget: Budget,
    main: Ring,
    live_waited: bool,
    redriven: int,
    oldest_redriven_age: float | None,
    paced: int,
) -> float:
    """Why re-driven work was refused although a slot was free, as seconds to wait."""
    if live_waited and redriven >= budget.redrive_quota:
        # Until its oldest slot of the window leaves it (age is negative: seconds ago).
        return float(oldest_redriven_age or 0.0) + main.window
    if paced >= budget.pace_size:
        return budget.pace_window / budget.pace_size
    return 0.0
