"""Failures on demand: random ones (rates in the config) and scripted ones (a FIFO per path).

A scripted entry, when one is waiting for the path, replaces the random draw for that request,
so a test gets exactly the failure it asked for and nothing else.
"""

from __future__ import annotations

import random
import threading
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sandbox.config import SandboxConfig

VENDOR_PREFIX = "/api_gateway/rewards/core/v1/vendor/redemption"
SCRIPTABLE_PATHS = (
    "/v2/coupon/redeem",
    "/v2/points/updateRedemption",
    "/v1.1/points/redeem",
    VENDOR_PREFIX,
    "/v3/oauth/token/generate",
)
RANDOM_ERROR_STATUSES = (500, 502, 503, 504)


@dataclass(frozen=True)
class Fault:
    # "status": answer that HTTP status, no effect      "drop": hang up, no effect
    # "code": the endpoint's in-body error, no effect    "lost": effect applied, then hang up
    # "slow": sleep `seconds`, then process normally
    kind: str
    status: int = 0
    retry_after: int | None = None
    code: int = 0
    seconds: float = 0.0


def script_key(path: str) -> str:
    """Vendor paths carry ids; all of them share one queue."""
    return VENDOR_PREFIX if path.startswith(VENDOR_PREFIX + "/") or path == VENDOR_PREFIX else path


def parse_fault(entry: Any) -> Fault:
    """One scripted entry, as POSTed to /_admin/script; ValueError says what is wrong."""
    if not isinstance(entry, dict):
        raise ValueError("each fault must be an object")
    if "status" in entry:
        status = entry["status"]
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError("status must be an HTTP error status (400-599)")
        retry_after = entry.get("retry_after")
        if retry_after is not None and (
            isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0
        ):
            raise ValueError("retry_after must be a whole number of seconds")
        return Fault("status", status=status, retry_after=retry_after)
    for name in ("code", "item_code"):
        if name in entry:
            code = entry[name]
            if isinstance(code, bool) or not isinstance(code, int):
                raise ValueError(f"{name} must be an integer")
            return Fault("code", code=code)
    action = entry.get("action")
    if action in ("drop", "lost"):
        return Fault(action)
    if action == "slow":
        seconds = entry.get("seconds", 2.0)
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float | Decimal)
            or not 0 <= seconds <= 600
        ):
            raise ValueError("seconds must be a number between 0 and 600")
        return Fault("slow", seconds=float(seconds))
    raise ValueError('a fault needs "status", "code", "item_code" or "action" (drop, lost, slow)')


class Faults:
    def __init__(self, seed: int | None) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, deque[Fault]] = {}
        self._rng = random.Random(seed)

    def reseed(self, seed: int | None) -> None:
        with self._lock:
            self._rng = random.Random(seed)

    def clear(self) -> None:
        with self._lock:
            self._scripts.clear()

    def add_script(self, path: str, entries: list[Any]) -> int:
        """Append to a path's queue (all entries valid, or none added); return its length."""
        key = script_key(path)
        if key not in SCRIPTABLE_PATHS:
            raise ValueError(f"path must be one of {', '.join(SCRIPTABLE_PATHS)}")
        faults = [parse_fault(entry) for entry in entries]
        with self._lock:
            queue = self._scripts.setdefault(key, deque())
            queue.extend(faults)
            return len(queue)

    def pending(self) -> dict[str, int]:
        with self._lock:
            return {path: len(queue) for path, queue in self._scripts.items() if queue}

    def next_scripted(self, path: str) -> Fault | None:
        key = script_key(path)
        with self._lock:
            queue = self._scripts.get(key)
            return queue.popleft() if queue else None

    def draw(self, config: SandboxConfig) -> tuple[Fault | None, float]:
        """A random fault (error, drop or lost; one draw so the rates are exact shares) and,
        independently, how long to sleep first (0 unless the request is one of the slow ones)."""
        error, drop, lost, slow = (
            config.error_rate,
            config.drop_rate,
            config.lost_rate,
            config.slow_rate,
        )
        if not (error or drop or lost or slow):
            return None, 0.0  # the common case costs no lock and no random number
        with self._lock:
            roll = self._rng.random()
            delay = config.slow_seconds if slow and self._rng.random() < slow else 0.0
            status = self._rng.choice(RANDOM_ERROR_STATUSES)
        if roll < error:
            return Fault("status", status=status), 0.0
        if roll < error + drop:
            return Fault("drop"), 0.0
        if roll < error + drop + lost:
            return Fault("lost"), delay
        return None, delay
