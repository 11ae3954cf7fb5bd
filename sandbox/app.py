"""One running sandbox's parts, in one place: config, state, counters, throttle, faults, tokens."""

from __future__ import annotations

import threading
from typing import Any

from sandbox.auth import TokenStore
from sandbox.config import SandboxConfig, apply_changes
from sandbox.customer_locks import CustomerLocks
from sandbox.faults import Faults
from sandbox.ratelimit import RateLimiter
from sandbox.state import Store
from sandbox.stats import Stats


class SandboxApp:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.store = Store(config.default_points_balance, config.seed)
        self.stats = Stats()
        self.limiter = RateLimiter(config.rate_limit_per_minute, config.rate_window_seconds)
        self.faults = Faults(config.seed)
        self.tokens = TokenStore()
        self.locks = CustomerLocks()
        self._config_lock = threading.Lock()

    def reset(self) -> None:
        """Forget everything that happened; keep the configuration (and replay its seed)."""
        self.store.clear()
        self.stats.clear()
        self.faults.clear()
        self.faults.reseed(self.config.seed)
        self.tokens.clear()
        self.limiter.reset()

    def reconfigure(self, changes: dict[str, Any]) -> None:
        with self._config_lock:
            apply_changes(self.config, changes)
            if "rate_limit_per_minute" in changes or "rate_window_seconds" in changes:
                self.limiter.configure(
                    self.config.rate_limit_per_minute, self.config.rate_window_seconds
                )
            if "seed" in changes:
                self.faults.reseed(self.config.seed)
