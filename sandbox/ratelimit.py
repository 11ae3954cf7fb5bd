"""The platform's throttle: a strict sliding window per API key.

The pages give "1000 requests per minute per API key". The sandbox counts exactly that: a request
is accepted when fewer than the limit were accepted for its key in the window before it (60 s by
default; ``rate_window_seconds`` shrinks it for tests). Refused requests have no effect and do not
count. An operator (or the benchmark) can also make the platform throttle every request for a
while (``POST /_admin/throttle``), as a platform under load would.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque


class RateLimiter:
    def __init__(self, per_minute: int, window_seconds: float = 60.0) -> None:
        self._lock = threading.Lock()
        self._accepted: dict[str, deque[float]] = {}  # key -> times of accepted requests
        self._throttle_until = 0.0
        self.configure(per_minute, window_seconds)

    def configure(self, per_minute: int, window_seconds: float | None = None) -> None:
        """Set a new limit (and window); every key starts afresh (a new limit is a new regime)."""
        with self._lock:
            self._limit = per_minute
            if window_seconds is not None:
                self._window = window_seconds
            self._accepted.clear()

    def reset(self) -> None:
        with self._lock:
            self._accepted.clear()
            self._throttle_until = 0.0

    def throttle_for(self, seconds: float) -> None:
        """Refuse every request, whatever its key, for the next ``seconds``."""
        with self._lock:
            self._throttle_until = time.monotonic() + seconds

    def take(self, key: str) -> int:
        """0 if the request may go ahead, else the whole seconds to wait (>= 1) for Retry-After."""
        now = time.monotonic()
        with self._lock:
            if self._throttle_until > now:
                return max(1, math.ceil(self._throttle_until - now))
            if self._limit <= 0:
                return 0
            accepted = self._accepted.setdefault(key, deque())
            while accepted and accepted[0] <= now - self._window:
                accepted.popleft()
            if len(accepted) < self._limit:
                accepted.append(now)
                return 0
            return max(1, math.ceil(accepted[0] + self._window - now))
