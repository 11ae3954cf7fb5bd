"""The shared rate limiter: every process together stays within the budget."""

from __future__ import annotations

import itertools
import multiprocessing
import time

import pytest

from models.session import build_engine
from worker.ratelimit import GlobalRateLimiter, Throttled


def _spend(url: str, per_minute: int, start: float, deadline: float, queue) -> None:
    engine = build_engine(url)
    limiter = GlobalRateLimiter(engine, key="shared-key", per_minute=per_minute)
    granted = []
    time.sleep(max(0.0, start - time.time()))
    while time.time() < deadline:
        if limiter.try_acquire() == 0.0:
            granted.append(time.time())
    engine.dispose()
    queue.put(granted)


def test_three_processes_racing_for_slots_never_exceed_the_limit(pg_url, clean_db):
    per_minute, seconds = 600, 3.0  # ten a second between all of them
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    # One window for all three, opened once every process is surely up.
    start = time.time() + 4.0
    window = (pg_url, per_minute, start, start + seconds, queue)
    processes = [context.Process(target=_spend, args=window) for _ in range(3)]
    for process in processes:
        process.start()
    grants = sorted(t for _ in processes for t in queue.get(timeout=60))
    for process in processes:
        process.join(timeout=30)
    assert len(grants) <= seconds * per_minute / 60 + 1
    assert len(grants) >= seconds * per_minute / 60 * 0.8  # and the budget is actually used
    gaps = [later - earlier for earlier, later in itertools.pairwise(grants)]
    # Grants are spaced by the emission interval (0.1 s), give or take when each process read
    # its clock after the grant: never two at once.
    assert min(gaps) >= 0.05


def test_a_long_wait_is_handed_back_as_throttled(clean_db):
    limiter = GlobalRateLimiter(clean_db, key="slow-key", per_minute=6, max_wait_seconds=1.0)
    limiter.acquire()
    with pytest.raises(Throttled) as raised:
        limiter.acquire()
    assert 8.0 < raised.value.retry_after <= 10.0


def test_the_embedded_sqlite_limiter_follows_the_same_rule(tmp_path):
    from worker import migrate

    url = f"sqlite:///{tmp_path / 'limit.sqlite3'}"
    migrate.upgrade(url)
    engine = build_engine(url)
    limiter = GlobalRateLimiter(engine, key="k", per_minute=60)
    assert limiter.try_acquire() == 0.0
    wait = limiter.try_acquire()
    assert 0.9 < wait <= 1.0
    engine.dispose()
