"""The budget's rule in memory, for the one-process SQLite demo: the same rings, pause and share,
under a thread lock instead of row locks."""

from __future__ import annotations

import math
import threading
import time

from worker.budget.rule import LIVE, REDRIVE, Budget, Ring, redrive_wait, spread


class MemoryKey:
    """One API key's rings, pause and "live work waited" mark."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rings: dict[str, list[tuple[float, bool]]] = {}
        self._paused_until = 0.0
        self._live_waited_at = -math.inf
        self._deferred_until: float | None = None
        self._paced_until = -math.inf

    def _ring(self, ring: Ring) -> list[tuple[float, bool]]:
        slots = self._rings.setdefault(ring.key, [])
        if len(slots) < ring.size:
            slots.extend([(-math.inf, False)] * (ring.size - len(slots)))
        return slots

    def take(self, rings: list[Ring], tier_name: str, budget: Budget) -> tuple[float, bool]:
        now = time.time()
        with self._lock:
            if self._paused_until > now:
                return self._paused_until - now, True
            waits: list[float] = []
            picks: list[int] = []
            for i, ring in enumerate(rings):
                used = [at for at, _ in self._ring(ring)[: ring.size]]
                order = sorted(range(ring.size), key=used.__getitem__)
                skip = budget.reserve if tier_name == REDRIVE and i == 0 else 0
                nth = order[min(skip, ring.size - 1)]
                waits.append(used[nth] + ring.window - now)
                picks.append(order[0])
            wait = max(waits)
            main = rings[0]
            if tier_name == REDRIVE and wait <= 0:
                recent = [
                    (at, redriven)
                    for at, redriven in self._ring(main)[: main.size]
                    if at > now - main.window
                ]
                redriven_at = [at for at, redriven in recent if redriven]
                wait = redrive_wait(
                    budget,
                    main,
                    self._live_waited_at > now - main.window,
                    len(redriven_at),
                    (min(redriven_at) - now) if redriven_at else None,
                    sum(1 for at, _ in recent if at > now - budget.pace_window),
                )
            elif tier_name == LIVE and wait <= 0 and self._saturated(now, main):
                live = [at for at, redriven in self._ring(main)[: main.size] if not redriven]
                paced = sum(1 for at in live if at > now - budget.pace_window)
                if paced >= budget.pace_size:
                    newest = sorted(live, reverse=True)
                    wait = newest[budget.pace_size - 1] + budget.pace_window - now
            if wait > 0:
                if tier_name == LIVE:
                    self._live_waited_at = now
                return max(wait, 0.005), False
            for ring, slot in zip(rings, picks, strict=True):
                self._rings[ring.key][slot] = (now, tier_name == REDRIVE)
            return 0.0, False

    def _saturated(self, now: float, main: Ring) -> bool:
        """Live work is paced: more calls were open than a turn serves."""
        return self._paced_until > now

    def defer(self, main: Ring, wait: float, spacing: float) -> float:
        """The next return time of a refused request, in seconds from now."""
        now = time.time()
        with self._lock:
            horizon = self._deferred_until
            later = [
                at + main.window
                for at, _ in self._ring(main)[: main.size]
                if horizon is not None and at + main.window > horizon
            ]
            self._deferred_until = spread(horizon, now, wait, min(later, default=None), spacing)
            return max(self._deferred_until - now, 0.005)

    def could_pace(self, main: Ring) -> bool:
        """No pace runs (see postgres.py, "Even once saturated")."""
        with self._lock:
            return self._paced_until <= time.time()

    def pace(self, main: Ring) -> None:
        """Pace live work for two turns from now (from the newest slot, if a clock ahead)."""
        with self._lock:
            newest = max(at for at, _ in self._ring(main)[: main.size])
            start = max(newest, time.time())
            self._paced_until = max(self._paced_until, start + 2 * main.window)

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, time.time() + seconds)

    def paused_for(self) -> float:
        with self._lock:
            return max(self._paused_until - time.time(), 0.0)


_keys: dict[str, MemoryKey] = {}
_guard = threading.Lock()


def key(name: str) -> MemoryKey:
    """The one MemoryKey of ``name`` in this process."""
    with _guard:
        return _keys.setdefault(name, MemoryKey())
