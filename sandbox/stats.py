"""What the platform saw: counters for the benchmark and tests, and a ring of recent requests.

Only platform requests are counted (never /_admin), including 401s, throttled and faulted ones,
so "how many calls did the worker make" has one honest answer.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from decimal import Decimal
from typing import Any

RING_SIZE = 10_000
PER_SECOND_KEEP = 3_600  # seconds of per-key history kept; older seconds are pruned
_SECRET_HEADERS = {"authorization", "x-cap-api-oauth-token"}

_COUNTERS = (
    "coupon_updates",
    "points_updates",
    "vendor_pushes",
    "overlaps_521",
    "throttled",
    "redeem_replays",
)


def redact(headers: dict[str, str]) -> dict[str, str]:
    return {
        name: ("***" if name.lower() in _SECRET_HEADERS else value)
        for name, value in headers.items()
    }


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.generation = 0
        self.clear()

    def clear(self) -> None:
        with self._lock:
            # A request still in flight when the stats are cleared (a slow one of the test
            # before) belongs to the old generation and is not counted in the new one.
            self.generation += 1
            self._total = 0
            self._by_endpoint: Counter[str] = Counter()
            self._by_status: Counter[str] = Counter()
            self._by_key: Counter[str] = Counter()
            self._per_second: dict[str, Counter[int]] = {}
            self._counters: Counter[str] = Counter()
            self._redeem_requests: Counter[str] = Counter()
            self._redeem_effects: Counter[str] = Counter()
            self._points_taken: dict[str, Decimal] = {}
            self._ring: deque[dict[str, Any]] = deque(maxlen=RING_SIZE)

    def record(self, entry: dict[str, Any], endpoint: str, generation: int) -> None:
        """One finished platform request that arrived in ``generation``; `entry` goes into the
        ring as it is."""
        key = entry.get("api_key")
        second = int(entry["time"])
        with self._lock:
            if generation != self.generation:
                return
            self._total += 1
            self._by_endpoint[endpoint] += 1
            self._by_status[str(entry["status"])] += 1
            if key:
                self._by_key[key] += 1
                seconds = self._per_second.setdefault(key, Counter())
                if second not in seconds and len(seconds) >= PER_SECOND_KEEP:
                    for old in [s for s in seconds if s <= second - PER_SECOND_KEEP]:
                        del seconds[old]
                seconds[second] += 1
            self._ring.append(entry)

    def bump(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counters[name] += amount

    def redeem_request(self, reference: str) -> None:
        with self._lock:
            self._redeem_requests[reference] += 1

    def redeem_effect(self, reference: str | None, mobile: str, points: Decimal) -> None:
        with self._lock:
            if reference:
                self._redeem_effects[reference] += 1
            self._points_taken[mobile] = self._points_taken.get(mobile, Decimal(0)) + points

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            view: dict[str, Any] = {
                "total": self._total,
                "by_endpoint": dict(self._by_endpoint),
                "by_status": dict(self._by_status),
                "by_key": dict(self._by_key),
                "per_second": {
                    k: {str(s): n for s, n in v.items()} for k, v in self._per_second.items()
                },
                "redeem_requests": dict(self._redeem_requests),
                "redeem_effects": dict(self._redeem_effects),
                "points_taken": {
                    mobile: str(total) for mobile, total in self._points_taken.items()
                },
            }
            view.update({name: self._counters[name] for name in _COUNTERS})
            return view

    def recent(self, limit: int, path: str | None) -> list[dict[str, Any]]:
        """The last `limit` requests (optionally for one path or path prefix), oldest first."""
        with self._lock:
            entries = list(self._ring)
        if path:
            prefix = path.rstrip("/") + "/"
            entries = [e for e in entries if e["path"] == path or e["path"].startswith(prefix)]
        return entries[-limit:] if limit > 0 else []


def new_entry(
    method: str, path: str, query: dict[str, str], headers: dict[str, str], body: Any
) -> dict[str, Any]:
    """The ring entry for a request; status, api_key and request_id are filled in later."""
    return {
        "time": time.time(),
        "method": method,
        "path": path,
        "query": query,
        "api_key": None,
        "status": None,
        "request_id": None,
        "headers": redact(headers),
        "body": body,
    }
