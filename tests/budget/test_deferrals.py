"""Deferred requests come back one by one, not as a herd (issue 14).

A live request refused for longer than it may wait in place goes back to the queue. Each gets a
return time of its own, across every process sharing the key: the first when the oldest slot
frees, each next one when the next slot frees, and once every slot is spoken for, a slot's
interval (window / limit) apart. Re-driven work and pauses after a 429 keep their own rules.
"""

from __future__ import annotations

import itertools
import time

import pytest
from sqlalchemy import text

from models.session import build_engine
from worker.budget import postgres
from worker.budget.limiter import LIVE, REDRIVE, GlobalRateLimiter, Throttled, tier


def _deferrals(limiter: GlobalRateLimiter, count: int) -> list[float]:
    """The return times (epoch seconds) ``count`` refused requests were given."""
    times = []
    for _ in range(count):
        with pytest.raises(Throttled) as refused:
            limiter.acquire()
        times.append(time.time() + refused.value.retry_after)
    return times


def _spent(
    engine, key: str, limit: int, window: float = 60.0, apart: float = 0.0
) -> GlobalRateLimiter:
    """A limiter whose every slot was just taken, ``apart`` seconds from one to the next."""
    limiter = GlobalRateLimiter(engine, key=key, per_minute=limit, window=window)
    for _ in range(limit):
        assert limiter.try_acquire(LIVE) == 0.0
        time.sleep(apart)
    return limiter


def test_refused_requests_come_back_one_per_slot_as_the_slots_free(clean_db):
    started = time.time()
    limiter = _spent(clean_db, "herd-key", limit=3, apart=0.3)  # a slot frees every 20 s

    times = _deferrals(limiter, 5)

    assert times[0] > started + 58.0  # not long before the oldest slot can free
    assert times == sorted(times)
    assert len(set(times)) == 5
    # The three slots free within a second of each other: one request each, not a herd ...
    assert times[2] - times[0] < 5.0, times
    # ... then every slot is spoken for: a slot's interval apart.
    assert all(later - earlier > 15.0 for earlier, later in itertools.pairwise(times[2:]))


def test_every_process_on_the_key_draws_from_the_same_line(clean_db, pg_url):
    first = _spent(clean_db, "shared-line", limit=4, apart=0.2)
    other_engine = build_engine(pg_url)
    try:
        other = GlobalRateLimiter(other_engine, key="shared-line", per_minute=4)
        times = sorted(_deferrals(first, 2) + _deferrals(other, 2))
    finally:
        other_engine.dispose()

    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert all(gap > 0.1 for gap in gaps), times  # one slot each: no two share a time


def test_a_slot_that_frees_is_still_taken_at_once_by_whoever_asks(clean_db):
    # Return times are a hint to the queue, not a reservation: a slot is never held empty.
    limiter = _spent(clean_db, "no-hold", limit=2, window=3.0)
    limiter.max_wait_seconds = 0.1
    _deferrals(limiter, 3)
    limiter.max_wait_seconds = 10.0

    limiter.acquire()  # waits in place for the first slot to free, and takes it, no Throttled


def test_redriven_work_is_not_put_in_the_live_line(clean_db):
    limiter = _spent(clean_db, "redrive-line", limit=4)
    live = _deferrals(limiter, 8)  # the last ones a slot's interval (15 s) apart

    with tier(REDRIVE), pytest.raises(Throttled) as refused:
        limiter.acquire()

    assert time.time() + refused.value.retry_after < live[-1]


def test_redriven_work_sleeps_out_its_wait_before_it_goes_back_to_the_queue(clean_db):
    """A full ring made every queued re-driven task cycle through the broker once a second: a
    slot a little further off than re-driven work may wait (0.5 s) now costs that wait first."""
    near = GlobalRateLimiter(clean_db, key="redrive-near", per_minute=4, window=1.5)
    for _ in range(4):
        assert near.try_acquire(LIVE) == 0.0
    started = time.monotonic()
    with tier(REDRIVE), pytest.raises(Throttled):
        near.acquire()  # the slot after the reserve frees in about 1.75 s
    assert 0.45 < time.monotonic() - started < 1.5

    far = GlobalRateLimiter(clean_db, key="redrive-far", per_minute=4, window=30.0)
    for _ in range(4):
        assert far.try_acquire(LIVE) == 0.0
    started = time.monotonic()
    with tier(REDRIVE), pytest.raises(Throttled):
        far.acquire()  # 30 s off: back to the queue at once, no worker asleep on it
    assert time.monotonic() - started < 0.4


def test_a_pause_after_a_429_sends_everyone_back_at_its_end(clean_db):
    limiter = GlobalRateLimiter(clean_db, key="paused-line", per_minute=1000)
    limiter.pause(30.0)

    now = time.time()
    times = _deferrals(limiter, 3)

    assert all(now + 25.0 < t <= now + 31.0 for t in times), times


def test_the_embedded_sqlite_limiter_spreads_deferrals_the_same_way(tmp_path):
    from worker.ops import migrate

    url = f"sqlite:///{tmp_path / 'defer.sqlite3'}"
    migrate.upgrade(url)
    engine = build_engine(url)
    try:
        limiter = _spent(engine, "sqlite-line", limit=2, apart=0.3)
        times = _deferrals(limiter, 4)
    finally:
        engine.dispose()

    assert times == sorted(times)
    assert times[1] - times[0] < 5.0
    assert all(later - earlier > 25.0 for earlier, later in itertools.pairwise(times[1:]))


def _taken_in(limiter: GlobalRateLimiter, seconds: float) -> int:
    """Slots one eager process takes in ``seconds``, asking again at once after each refusal."""
    taken, ends = 0, time.monotonic() + seconds
    while time.monotonic() < ends:
        if limiter.try_acquire(LIVE) == 0.0:
            taken += 1
    return taken


def _demand(calls: int):
    """What the reconciler's count of open calls (``worker/reconcile/open_calls.py``, tested on
    real rows in tests/reconcile/test_open_calls.py) reports, capped as it caps it."""
    return lambda conn, cap: min(calls, cap)


@pytest.mark.parametrize("engine_kind", ["postgresql", "sqlite"])
def test_a_full_ring_with_more_open_work_than_a_turn_serves_paces_live_work(
    engine_kind, clean_db, tmp_path
):
    # Issue 14: a ring spent in a burst frees in a burst a window later, and a 60 s window
    # that opens just after a burst began misses it. With more work open than one turn of the
    # ring serves, slots are handed out at the average rate (window / limit apart) instead.
    engine = clean_db
    if engine_kind == "sqlite":
        from worker.ops import migrate

        url = f"sqlite:///{tmp_path / 'pace.sqlite3'}"
        migrate.upgrade(url)
        engine = build_engine(url)
    limiter = _spent(engine, f"paced-{engine_kind}", limit=20, window=2.0)
    limiter.max_wait_seconds = 0.1
    limiter.demand = _demand(40)
    _deferrals(limiter, 1)  # the ring is full, and 40 calls are open

    time.sleep(2.3)  # every slot is free again
    taken = _taken_in(limiter, 0.5)

    assert 3 <= taken <= 7, taken  # one per 0.1 s (window / limit), not all 20 at once


@pytest.mark.parametrize("open_calls", [12, 20])
def test_when_one_turn_of_the_ring_serves_all_that_is_open_the_freed_slots_go_at_once(
    clean_db, open_calls
):
    # Issue 10's dependent pairs: the second turn's calls are refused (some of them twice, as
    # others take the freed slots first, and an order may have two tasks for one call), but
    # the open work fits in one turn, so nothing is paced.
    limiter = _spent(clean_db, f"not-paced-{open_calls}", limit=20, window=2.0)
    limiter.max_wait_seconds = 0.1
    limiter.demand = _demand(open_calls)
    _deferrals(limiter, 28)

    time.sleep(2.3)

    assert _taken_in(limiter, 0.5) == 20


def _limiter(engine_kind: str, clean_db, tmp_path, key: str) -> GlobalRateLimiter:
    engine = clean_db
    if engine_kind == "sqlite":
        from worker.ops import migrate

        url = f"sqlite:///{tmp_path / 'pace.sqlite3'}"
        migrate.upgrade(url)
        engine = build_engine(url)
    return GlobalRateLimiter(engine, key=f"{key}-{engine_kind}", per_minute=20, window=2.0)


@pytest.mark.parametrize("engine_kind", ["postgresql", "sqlite"])
def test_more_open_work_than_a_turn_serves_is_paced_from_the_first_request(
    engine_kind, clean_db, tmp_path
):
    # A ring paced only once it was full replayed the uneven turn it filled in (a backlog's
    # first calls go out while the intake still stores it, slower than the ones after), and
    # every 60 s window holding that slow stretch came short (81 % at 6,000/min). Paced from
    # the first request, the ring fills evenly.
    limiter = _limiter(engine_kind, clean_db, tmp_path, "paced-early")
    limiter.demand = _demand(1_000)
    limiter.acquire()  # the first request goes out, and finds 1,000 calls open

    taken = _taken_in(limiter, 0.5)

    assert 3 <= taken <= 7, taken  # one per 0.1 s (window / limit), not the 19 slots left


@pytest.mark.parametrize("engine_kind", ["postgresql", "sqlite"])
def test_open_work_that_one_turn_serves_goes_at_once(engine_kind, clean_db, tmp_path):
    # Issue 10: a backlog below the budget goes at once.
    limiter = _limiter(engine_kind, clean_db, tmp_path, "at-once")
    limiter.demand = _demand(20)
    limiter.acquire()

    assert _taken_in(limiter, 0.5) == 19  # paced, it would be about 5


def test_a_pace_is_not_cut_short_and_open_work_is_not_counted_while_it_runs(clean_db):
    counted: list[int] = []

    def demand(conn, cap):
        counted.append(cap)
        return 1_000

    limiter = GlobalRateLimiter(clean_db, key="pace-runs", per_minute=20, window=2.0)
    limiter.demand = demand
    limiter.acquire()
    assert len(counted) == 1
    with clean_db.connect() as conn:
        paced_until = conn.execute(
            text("SELECT paced_until FROM rate_limits WHERE key = 'pace-runs'")
        ).scalar()
    assert paced_until == pytest.approx(time.time() + 4.5, abs=0.2)  # two turns of 2.25 s

    time.sleep(1.1)  # the next count is due, but the pace runs
    limiter.acquire()
    main = limiter.budget.rings("pace-runs", LIVE)[0]
    with clean_db.connect() as conn:
        postgres.pace(conn, main)  # as a process that counted at the same time
        conn.commit()
        again = conn.execute(
            text("SELECT paced_until FROM rate_limits WHERE key = 'pace-runs'")
        ).scalar()

    assert len(counted) == 1
    assert again == paced_until  # the running pace is neither cut short nor pushed out


def test_a_ring_is_inserted_once_and_grows_with_its_limit(clean_db):
    def slots() -> int:
        with clean_db.connect() as conn:
            return conn.execute(
                text("SELECT count(*) FROM rate_limit_slots WHERE key = 'grows'")
            ).scalar()

    GlobalRateLimiter(clean_db, key="grows", per_minute=20).try_acquire(LIVE)
    assert slots() == 20
    GlobalRateLimiter(clean_db, key="grows", per_minute=40).try_acquire(LIVE)
    assert slots() == 40
    smaller = GlobalRateLimiter(clean_db, key="grows", per_minute=10, window=2.0)
    # Its own first ten slots only, two of which the limiters above took a moment ago.
    assert sum(smaller.try_acquire(LIVE) == 0.0 for _ in range(12)) == 8
