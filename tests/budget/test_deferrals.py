"""Deferred requests come back one by one, not as a herd (issue 14).

A live request refused for longer than it may wait in place goes back to the queue. Each gets a
return time of its own: the first when the oldest slot frees, each next one a slot's interval
(window / limit) later, across every process sharing the key. Re-driven work and pauses after a
429 keep their own rules.
"""

from __future__ import annotations

import itertools

import pytest

from models.session import build_engine
from worker.budget.limiter import LIVE, REDRIVE, GlobalRateLimiter, Throttled, tier


def _deferrals(limiter: GlobalRateLimiter, count: int) -> list[float]:
    """The return times (seconds from now) ``count`` refused requests were given."""
    times = []
    for _ in range(count):
        with pytest.raises(Throttled) as refused:
            limiter.acquire()
        times.append(refused.value.retry_after)
    return times


def _spent(engine, key: str, limit: int, window: float = 60.0) -> GlobalRateLimiter:
    limiter = GlobalRateLimiter(engine, key=key, per_minute=limit, window=window)
    assert [limiter.try_acquire(LIVE) for _ in range(limit)] == [0.0] * limit
    return limiter


def test_refused_requests_each_get_a_later_return_time_a_slot_apart(clean_db):
    limiter = _spent(clean_db, "herd-key", limit=4)  # a slot frees every 15 s on average

    times = _deferrals(limiter, 5)

    assert times[0] > 55.0  # not before the oldest slot can free
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap > 14.0 for gap in gaps), times  # 15 s apart, less the time the calls took


def test_every_process_on_the_key_draws_from_the_same_line(clean_db, pg_url):
    first = _spent(clean_db, "shared-line", limit=6)
    other_engine = build_engine(pg_url)
    try:
        other = GlobalRateLimiter(other_engine, key="shared-line", per_minute=6)
        times = sorted(_deferrals(first, 2) + _deferrals(other, 2))
    finally:
        other_engine.dispose()

    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap > 9.0 for gap in gaps), times  # 10 s apart: no two share a time


def test_a_slot_that_frees_is_still_taken_at_once_by_whoever_asks(clean_db):
    # Return times are a hint to the queue, not a reservation: a slot is never held empty.
    limiter = _spent(clean_db, "no-hold", limit=2, window=3.0)
    limiter.max_wait_seconds = 0.1
    _deferrals(limiter, 3)
    limiter.max_wait_seconds = 10.0

    limiter.acquire()  # waits in place for the first slot to free, and takes it, no Throttled


def test_redriven_work_is_not_put_in_the_live_line(clean_db):
    limiter = _spent(clean_db, "redrive-line", limit=4)
    live = _deferrals(limiter, 3)

    with tier(REDRIVE), pytest.raises(Throttled) as refused:
        limiter.acquire()

    assert refused.value.retry_after < live[-1]


def test_a_pause_after_a_429_sends_everyone_back_at_its_end(clean_db):
    limiter = GlobalRateLimiter(clean_db, key="paused-line", per_minute=1000)
    limiter.pause(30.0)

    times = _deferrals(limiter, 3)

    assert all(25.0 < t <= 30.0 for t in times), times


def test_the_embedded_sqlite_limiter_spreads_deferrals_the_same_way(tmp_path):
    from worker.ops import migrate

    url = f"sqlite:///{tmp_path / 'defer.sqlite3'}"
    migrate.upgrade(url)
    engine = build_engine(url)
    try:
        limiter = _spent(engine, "sqlite-line", limit=3)
        times = _deferrals(limiter, 3)
    finally:
        engine.dispose()

    assert times[0] > 55.0
    assert all(later - earlier > 19.0 for earlier, later in itertools.pairwise(times))
