"""The platform's throttle: a token bucket per API key.

The pages give "1000 requests per minute per API key". A bucket that holds one second's worth
(rate/60, at least 1) refuses bursts the way a per-second enforcement would, so a client that
only respects the per-minute average still gets 429s here, as it would in production.
"""

from __future__ import annotations

import math
import threading
import time


class RateLimiter:
    def __init__(self, per_minute: int) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self.configure(per_minute)

    def configure(self, per_minute: int) -> None:
        """Set a new limit; every bucket starts full again (a new limit is a new regime)."""
        with self._lock:
            self._rate = per_minute / 60.0
            self._capacity = max(1.0, self._rate)
            self._buckets.clear()

    def reset(self) -> None:
        with self._lock:
            self._buckets.clear()

    def take(self, key: str) -> int:
        """0 if the request may go ahead, else the whole seconds to wait (>= 1) for Retry-After."""
        if self._rate <= 0:
            return 0
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self._capacity, now))
            tokens = min(self._capacity, tokens + (now - last) * self._rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0
            self._buckets[key] = (tokens, now)
            return max(1, math.ceil((1.0 - tokens) / self._rate))
