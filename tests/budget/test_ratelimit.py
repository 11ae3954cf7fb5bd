"""The shared rate limiter: exact to the window, bursts, a shared pause, live ahead of re-driven.

The window is a parameter of the limiter (the platform's is 60 s); the exactness test shrinks it
to a few seconds so it can watch several windows go by, and the sandbox counts the same window.
"""

from __future__ import annotations

import bisect
import multiprocessing
import threading
import time

import pytest
import requests

from models.session import build_engine
from tests.conftest import SANDBOX_PASSWORD, SANDBOX_USER
from worker.budget.limiter import LIVE, REDRIVE, GlobalRateLimiter, Throttled, tier
from worker.loyalty import basic_auth_header

COUPON = "/v2/coupon/redeem"


def most_in_any_window(times: list[float], window: float) -> int:
    """The largest number of ``times`` inside any half-open interval [t, t + window)."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + window) - i for i, t in enumerate(times)), default=0)


def _send_through_limiter(
    db_url: str,
    sandbox_url: str,
    limit: int,
    window: float,
    seconds: float,
    go,
    queue,
) -> None:
    engine = build_engine(db_url)
    limiter = GlobalRateLimiter(
        engine, key="shared-key", per_minute=limit, window=window, guard_seconds=0.5
    )
    http = requests.Session()
    headers = {
        "Authorization": basic_auth_header(SANDBOX_USER, SANDBOX_PASSWORD),
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    sent = []
    queue.put("ready")
    go.wait(timeout=120)
    deadline = time.time() + seconds
    while time.time() < deadline:
        wait = limiter.try_acquire(LIVE)
        if wait == 0.0:
            at = time.time()
            status = http.put(sandbox_url + COUPON, json={}, headers=headers, timeout=10)
            sent.append((at, status.status_code))
        else:
            time.sleep(min(wait, 0.2))
    http.close()
    engine.dispose()
    queue.put(sent)


def test_four_processes_on_one_key_never_put_more_than_the_limit_in_any_window(
    pg_url, clean_db, sandbox
):
    limit, window, seconds = 12, 3.0, 7.0
    # The platform (the sandbox) counts the same sliding window, strictly.
    sandbox.configure(rate_limit_per_minute=limit, rate_window_seconds=window)
    context = multiprocessing.get_context("spawn")
    queue, go = context.Queue(), context.Event()
    args = (pg_url, sandbox.url, limit, window, seconds, go, queue)
    processes = [context.Process(target=_send_through_limiter, args=args) for _ in range(4)]
    for process in processes:
        process.start()
    assert [queue.get(timeout=120) for _ in processes] == ["ready"] * len(processes)
    go.set()  # one start for all, once every process is up
    sent = [entry for _ in processes for entry in queue.get(timeout=120)]
    for process in processes:
        process.join(timeout=30)

    times = [at for at, _ in sent]
    assert most_in_any_window(times, window) <= limit
    stats = sandbox.stats()
    assert stats["throttled"] == 0
    assert "429" not in stats["by_status"]
    assert 429 not in {status for _, status in sent}  # (an empty body: 400, past the throttle)
    # The budget is used: over two windows went by, each time the whole limit at once.
    assert len(sent) >= 2 * limit
    # And each process got some of it: nobody is starved.
    assert stats["total"] == len(sent)


def _take_n(db_url: str, limit: int, n: int, queue) -> None:
    engine = build_engine(db_url)
    limiter = GlobalRateLimiter(engine, key="burst-key", per_minute=limit)
    queue.put([limiter.try_acquire(LIVE) for _ in range(n)])
    engine.dispose()


def test_a_backlog_smaller_than_the_limit_goes_at_once_from_every_process(pg_url, clean_db):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    processes = [context.Process(target=_take_n, args=(pg_url, 30, 10, queue)) for _ in range(3)]
    for process in processes:
        process.start()
    waits = [wait for _ in processes for wait in queue.get(timeout=120)]
    for process in processes:
        process.join(timeout=30)

    assert waits == [0.0] * 30  # 30 of a 30/min budget: no request waited
    one_more = GlobalRateLimiter(clean_db, key="burst-key", per_minute=30).try_acquire(LIVE)
    assert 50.0 < one_more <= 60.5  # the 31st waits until the first leaves the window


def test_a_smaller_burst_setting_smooths_the_same_budget(clean_db):
    limiter = GlobalRateLimiter(clean_db, key="smooth-key", per_minute=60, burst=5)

    assert [limiter.try_acquire(LIVE) for _ in range(5)] == [0.0] * 5
    wait = limiter.try_acquire(LIVE)
    assert 0.0 < wait <= 5.0  # five per five seconds: the same 60 a minute, never 5+ at once


def test_a_429_pauses_the_key_for_every_process(clean_db):
    told = GlobalRateLimiter(clean_db, key="paused-key", per_minute=1000)
    other = GlobalRateLimiter(clean_db, key="paused-key", per_minute=1000, max_wait_seconds=30)
    assert other.try_acquire(LIVE) == 0.0

    told.pause(2.0)

    assert 1.0 < other.try_acquire(LIVE) <= 2.0
    with pytest.raises(Throttled):
        other.acquire()  # back to the queue, not asleep on a worker, even with time to spare
    deadline = time.monotonic() + 30
    while other.paused_for() > 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    other.acquire()


def test_a_429_without_retry_after_pauses_for_the_default(clean_db):
    limiter = GlobalRateLimiter(clean_db, key="default-pause", per_minute=1000)
    paused = limiter.pause(None)
    assert paused > 0
    assert 0 < limiter.paused_for() <= paused


def _hammer(
    limiter: GlobalRateLimiter,
    tier_name: str,
    stop: threading.Event,
    out: list,
    every: float = 0.0,
) -> None:
    """Ask for slots: all the time, or one every ``every`` seconds (waiting when refused)."""
    with tier(tier_name):
        while not stop.is_set():
            wait = limiter.try_acquire()
            if wait == 0.0:
                out.append(time.time())
                stop.wait(every)
            else:
                time.sleep(min(wait, 0.05))


def test_while_live_work_waits_redriven_work_takes_at_most_its_share(clean_db):
    limit, window = 20, 3.0

    def limiter() -> GlobalRateLimiter:
        return GlobalRateLimiter(
            clean_db,
            key="shared-budget",
            per_minute=limit,
            redrive_share=0.5,
            window=window,
            guard_seconds=0.1,
        )

    live: list[float] = []
    redriven: list[float] = []
    stop = threading.Event()
    threads = [
        # Live wants about 4 a second of the 20 per 3 s (6.7 a second) budget ...
        threading.Thread(target=_hammer, args=(limiter(), LIVE, stop, live, 0.25)),
        # ... re-driven work wants everything it can get.
        threading.Thread(target=_hammer, args=(limiter(), REDRIVE, stop, redriven)),
    ]
    for thread in threads:
        thread.start()
    time.sleep(4 * window)  # let several windows go by
    stop.set()
    for thread in threads:
        thread.join(timeout=30)

    assert most_in_any_window(live + redriven, window) <= limit
    assert most_in_any_window(redriven, window) <= limit * 0.5
    assert len(redriven) > 0  # held to its share, not starved
    assert len(live) >= len(redriven)


def test_with_no_live_work_redriven_work_may_use_the_whole_budget_but_live_never_waits(
    clean_db,
):
    limit, window = 20, 3.0
    redrive = GlobalRateLimiter(clean_db, key="quiet-budget", per_minute=limit, window=window)
    granted = 0
    deadline = time.monotonic() + 60
    with tier(REDRIVE):
        # Paced (one second's worth at a time), it takes all but the reserve it leaves live work.
        while granted < limit - 1:
            assert time.monotonic() < deadline, f"re-driven work got only {granted} slots"
            wait = redrive.try_acquire()
            if wait == 0.0:
                granted += 1
            else:
                assert wait < window, "re-driven work was held back although no live waited"
                time.sleep(min(wait, 0.2))
        assert redrive.try_acquire() > 0  # the reserve is not for re-driven work
    live = GlobalRateLimiter(clean_db, key="quiet-budget", per_minute=limit, window=window)
    assert live.try_acquire(LIVE) == 0.0


def test_the_embedded_sqlite_limiter_follows_the_same_rule(tmp_path):
    from worker.ops import migrate

    url = f"sqlite:///{tmp_path / 'limit.sqlite3'}"
    migrate.upgrade(url)
    engine = build_engine(url)
    limiter = GlobalRateLimiter(engine, key="sqlite-key", per_minute=3)
    assert [limiter.try_acquire(LIVE) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert 55.0 < limiter.try_acquire(LIVE) <= 60.5
    limiter.pause(5.0)
    with pytest.raises(Throttled):
        limiter.acquire()
    engine.dispose()
