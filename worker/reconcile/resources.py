"""Per-process resources: the engine, the rate limiter and the loyalty client.

Built on first use in each process (after a prefork pool has forked), never at import; every task
gets them from its base (``ReconTask.resources``), the CLI's backfill builds its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from threading import Lock
from typing import Any

from celery import signals
from sqlalchemy import Engine

from models.session import engine_for, forget_engines_after_fork
from worker.budget.limiter import GlobalRateLimiter
from worker.loyalty import LoyaltyClient
from worker.reconcile.open_calls import open_calls
from worker.reconcile.outcomes import Policy
from worker.settings import Settings


@dataclass
class Resources:
    settings: Settings
    engine: Engine
    limiter: GlobalRateLimiter
    client: LoyaltyClient
    policy: Policy


_lock = Lock()
_cache: dict[tuple[int, int], Resources] = {}


def build(settings: Settings, *, max_wait_seconds: float | None = None) -> Resources:
    """``max_wait_seconds``: how long one call may wait in place for the shared rate limit
    (a task gives its slot back beyond it; the CLI backfill can afford to wait longer). By
    default live work waits up to 2 s and re-driven work up to 0.5 s."""
    engine = engine_for(settings.database_url)
    limiter = GlobalRateLimiter(
        engine,
        key=settings.api_key,
        per_minute=settings.rate_limit_per_minute,
        burst=settings.rate_limit_burst,
        redrive_share=settings.backfill_budget_share,
        demand=open_calls,
    )
    if max_wait_seconds is not None:
        limiter.max_wait_seconds = limiter.redrive_max_wait_seconds = max_wait_seconds
    client = LoyaltyClient.from_settings(
        settings, throttle=limiter.acquire, on_rate_limited=limiter.pause
    )
    policy = Policy(
        max_attempts=settings.max_attempts, retry_base_seconds=settings.retry_base_seconds
    )
    return Resources(settings, engine, limiter, client, policy)


def for_settings(settings: Settings) -> Resources:
    key = (os.getpid(), id(settings))
    with _lock:
        if key not in _cache:
            _cache[key] = build(settings)
        return _cache[key]


@signals.worker_process_init.connect
def reset_after_fork(**_: Any) -> None:
    """In a pool process just forked: pooled database connections and HTTP sessions must not
    cross a fork (the task modules import this module before the pool starts)."""
    with _lock:
        _cache.clear()
    forget_engines_after_fork()
