"""Which customers have a request in flight (the platform's code 521).

The platform refuses, at once, a second request for a customer whose first is still running.
A set of busy keys, tested and filled under one lock, never blocks and never grows past the
number of requests in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Collection


def customer_key(identifier_type: str, value: str) -> str:
    """The same customer through any endpoint maps to the same key."""
    return f"{identifier_type}:{value}"


class CustomerLocks:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: set[str] = set()

    def try_acquire(self, keys: Collection[str]) -> bool:
        """Take all keys, or none if any is busy."""
        with self._lock:
            if not self._busy.isdisjoint(keys):
                return False
            self._busy.update(keys)
            return True

    def release(self, keys: Collection[str]) -> None:
        with self._lock:
            self._busy.difference_update(keys)
