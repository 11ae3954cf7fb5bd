"""The platform's request budget, shared by every worker process on every host.

The platform counts requests per API key in a sliding 60-second window. This limiter counts the
same way, exactly, with a **ring of slots**: each key has ``limit`` rows in ``rate_limit_slots``,
each holding the time of its last use on the database clock. A slot is free when its last use is
at least one window old; taking one is a single atomic statement (pick the oldest free slot with
``FOR UPDATE SKIP LOCKED``, stamp it with the database's clock). Since every request holds a slot
and a slot is reused only a full window later, no window can ever hold more than ``limit``
requests, however many processes race, and a backlog smaller than the limit goes out at once.

Why a ring rather than GCRA or a counter: GCRA (the previous design) is exact only by spacing
requests ``60 / limit`` apart, which turns a budget the platform would accept in one second into a
one-minute drip; a fixed-window counter allows twice the limit across a window boundary; a log of
every request (one row per call, counted on each take) grows with traffic and needs a sweeper. The
ring is bounded (``limit`` rows per key), exact under concurrency (a row lock per slot, re-checked
on the newest row version under READ COMMITTED) and answers "how long until a slot frees?" from
the oldest timestamp. A small guard (``guard_seconds``) is added to the window because a slot is
stamped when granted, a few milliseconds before the request reaches the platform.

Three refinements, all inside the same statement:

* ``LOYALTY_RATE_LIMIT_BURST`` smaller than the limit adds a second, smaller ring (``burst``
  slots over ``burst / limit`` of the window): at most ``burst`` requests go at once, for
  platforms that throttle bursts. The default (the whole limit) has only the main ring.
* Live work first. Work is tagged ``live`` or ``redrive`` (backfill, sweeper) with
  ``tier(...)``. Re-driven work is paced so that everyone together stays at the limit's average
  rate (it does not burst: a backfill that took the whole minute at once would leave live work
  waiting for that minute to pass), always leaves a reserve of free slots for live work, and, in
  any window in which live work had to wait for a slot, takes at most
  ``RECON_BACKFILL_BUDGET_SHARE`` of the budget. Live work is never held back for re-driven
  work; when no live work waits, re-driven work may use the whole budget.
* A 429 pauses the key: ``pause()`` stores ``paused_until`` for the key, every take checks it,
  so no process sends on the key until the platform's ``Retry-After`` has passed.

The embedded SQLite demo runs in one process: there the same rule runs in memory.

The functions ``slot_taken``, ``slot_waited``, ``deferred``, ``platform_throttled`` and
``customer_busy`` are called once per event; they are where metrics hook in.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import structlog
from sqlalchemy import Connection, Engine, text

from worker.observe import metrics

log = structlog.get_logger(__name__)

LIVE = "live"
REDRIVE = "redrive"
TIERS = (LIVE, REDRIVE)
#: The platform's window. A parameter of the limiter so tests can shrink it.
WINDOW_SECONDS = 60.0
#: How long every process pauses after a 429 that carries no ``Retry-After``.
DEFAULT_PAUSE_SECONDS = 5.0

_tier: ContextVar[str] = ContextVar("recon_rate_limit_tier", default=LIVE)


@contextmanager
def tier(name: str) -> Iterator[None]:
    """Calls made inside are counted as ``name`` (``live`` or ``redrive``) work."""
    if name not in TIERS:
        raise ValueError(f"unknown rate-limit tier {name!r}")
    token = _tier.set(name)
    try:
        yield
    finally:
        _tier.reset(token)


def current_tier() -> str:
    return _tier.get()


# --- One function per event: metrics hook in here (keep them cheap and never raising). --------


def _work(tier_name: str) -> str:
    return "redriven" if tier_name == REDRIVE else "live"


def slot_taken(tier_name: str) -> None:
    """A request got a slot of the shared budget."""
    metrics.ratelimit_slot(_work(tier_name))


def slot_waited(tier_name: str, seconds: float) -> None:
    """A request waited in place for a slot (a short wait, under ``max_wait``)."""
    metrics.ratelimit_wait(seconds, _work(tier_name))


def deferred(tier_name: str, seconds: float) -> None:
    """A request would have waited too long: its task goes back to the queue with a countdown."""
    metrics.ratelimit_deferral(_work(tier_name))


def platform_throttled(pause_seconds: float, retry_after: float | None) -> None:
    """The platform answered 429; every process pauses the key for ``pause_seconds``."""


def customer_busy() -> None:
    """The platform answered 521 (another request for the customer is running)."""


# -------------------------------------------------------------------------------------------


class Throttled(Exception):
    """The budget is spent for longer than is worth waiting in place; come back later."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"rate limit reached; next slot in {retry_after:.2f} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class Ring:
    key: str
    size: int
    window: float


@dataclass(frozen=True)
class Budget:
    """How one key's budget is spent: the limit, the burst, the share of re-driven work."""

    per_minute: int
    burst: int | None = None
    redrive_share: float = 0.5
    window: float = WINDOW_SECONDS
    guard_seconds: float = 0.25

    @property
    def burst_size(self) -> int:
        return min(self.burst or self.per_minute, self.per_minute)

    @property
    def redrive_quota(self) -> int:
        """Slots re-driven work may hold in a window in which live work had to wait."""
        return math.floor(self.per_minute * self.redrive_share)

    @property
    def reserve(self) -> int:
        """Free slots re-driven work always leaves to live work (1 % of the budget, at least 1)."""
        return min(max(1, self.per_minute // 100), self.per_minute - 1)

    def rings(self, key: str, tier_name: str) -> list[Ring]:
        """The rings a request of ``tier_name`` takes one slot from, main ring first."""
        rings = [Ring(key, self.per_minute, self.window + self.guard_seconds)]
        if self.burst_size < self.per_minute:
            size = self.burst_size
            rings.append(Ring(f"{key}/burst", size, self.window * size / self.per_minute))
        return rings

    @property
    def pace_size(self) -> int:
        """Re-driven work is paced: it takes a slot only while everyone together used fewer
        than this many in the last ``pace_window`` (one second's worth of the average rate).
        So the window fills no faster than it drains, and live work arriving during a backfill
        finds slots all the time, not only when the first minute's slots come free."""
        return max(1, min(self.burst_size, self.per_minute // 60))

    @property
    def pace_window(self) -> float:
        return self.window * self.pace_size / self.per_minute


@dataclass
class GlobalRateLimiter:
    engine: Engine
    key: str
    per_minute: int
    burst: int | None = None
    redrive_share: float = 0.5
    #: Waits up to this long in place; beyond it raises Throttled so the task gives its slot
    #: back to the queue instead of sleeping on it.
    max_wait_seconds: float = 2.0
    #: Re-driven work sleeps less: a worker process asleep for the backfill is not free for live
    #: work.
    redrive_max_wait_seconds: float = 0.5
    window: float = WINDOW_SECONDS
    guard_seconds: float = 0.25
    _ready: set[str] = field(default_factory=set, init=False, repr=False)

    @property
    def budget(self) -> Budget:
        return Budget(
            per_minute=self.per_minute,
            burst=self.burst,
            redrive_share=self.redrive_share,
            window=self.window,
            guard_seconds=self.guard_seconds,
        )

    @property
    def _postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def try_acquire(self, tier_name: str | None = None) -> float:
        """Take one slot if free: 0.0, else the seconds until one may be."""
        return self._attempt(tier_name or current_tier())[0]

    def _attempt(self, tier_name: str) -> tuple[float, bool]:
        """(0.0, False) when a slot was taken, else (seconds to wait, paused after a 429)."""
        budget = self.budget
        rings = budget.rings(self.key, tier_name)
        if not self._postgres:
            return _local(self.key).take(rings, tier_name, budget)
        for _ in range(2):
            with self.engine.begin() as conn:
                self._ensure(conn, rings)
                if _pg_take(conn, rings, tier_name, budget):
                    return 0.0, False
                answer = _pg_wait(conn, rings, tier_name, budget)
                if answer is not None:
                    return answer
            # The ring's rows are gone (a test emptied the table): set them up again.
            self._ready.clear()
        raise RuntimeError("the rate limiter's slots could not be set up")

    def acquire(self) -> None:
        """Block until a slot is taken, or raise Throttled when that would take too long.

        During a pause after a 429 nobody waits in place: the task goes back to the queue.
        """
        tier_name = current_tier()
        limit = self.redrive_max_wait_seconds if tier_name == REDRIVE else self.max_wait_seconds
        waited = 0.0
        while True:
            wait, paused = self._attempt(tier_name)
            if wait == 0.0:
                slot_taken(tier_name)
                if waited:
                    slot_waited(tier_name, waited)
                return
            if paused or waited + wait > limit:
                deferred(tier_name, wait)
                raise Throttled(wait)
            time.sleep(wait)
            waited += wait

    def pause(self, retry_after: float | None) -> float:
        """The platform answered 429: no process sends on this key before its time is up."""
        seconds = DEFAULT_PAUSE_SECONDS if retry_after is None else max(retry_after, 0.0)
        if self._postgres:
            with self.engine.begin() as conn:
                conn.execute(_PG_PAUSE, {"key": self.key, "pause": seconds})
        else:
            _local(self.key).pause(seconds)
        platform_throttled(seconds, retry_after)
        log.warning("ratelimit.paused", seconds=round(seconds, 3), retry_after=retry_after)
        return seconds

    def paused_for(self) -> float:
        """Seconds left of a pause after a 429 (0.0 when none)."""
        if not self._postgres:
            return _local(self.key).paused_for()
        with self.engine.connect() as conn:
            left = conn.execute(_PG_PAUSED_FOR, {"key": self.key}).scalar()
        return max(float(left or 0.0), 0.0)

    def _ensure(self, conn: Connection, rings: list[Ring]) -> None:
        for ring in rings:
            if ring.key in self._ready:
                continue
            conn.execute(_PG_ENSURE, {"key": ring.key, "size": ring.size})
            self._ready.add(ring.key)


# --- PostgreSQL ---------------------------------------------------------------------------

_NOW = "(SELECT t FROM now)"
_PG_ENSURE = text("""
    INSERT INTO rate_limit_slots (key, slot, used_at, redriven)
    SELECT :key, g, 0, false FROM generate_series(0, :size - 1) AS g
    ON CONFLICT (key, slot) DO NOTHING
""")
_PG_PAUSE = text("""
    INSERT INTO rate_limits AS r (key, paused_until)
    VALUES (:key, extract(epoch FROM clock_timestamp()) + :pause)
    ON CONFLICT (key) DO UPDATE
        SET paused_until = greatest(coalesce(r.paused_until, 0), excluded.paused_until)
""")
_PG_PAUSED_FOR = text(
    "SELECT paused_until - extract(epoch FROM clock_timestamp()) FROM rate_limits WHERE key = :key"
)
_PG_LIVE_WAITED = text("""
    INSERT INTO rate_limits AS r (key, live_waited_at)
    VALUES (:key, extract(epoch FROM clock_timestamp()))
    ON CONFLICT (key) DO UPDATE SET live_waited_at = excluded.live_waited_at
""")
_PG_RING_WAIT = text("""
    SELECT used_at + :window - extract(epoch FROM clock_timestamp()) FROM rate_limit_slots
    WHERE key = :key AND slot < :size ORDER BY used_at OFFSET :skip LIMIT 1
""")
_PG_REDRIVE_STATE = text("""
    WITH now AS (SELECT extract(epoch FROM clock_timestamp()) AS t)
    SELECT
        EXISTS (SELECT 1 FROM rate_limits l
                WHERE l.key = :key AND l.live_waited_at > (SELECT t FROM now) - :window),
        count(*) FILTER (WHERE redriven),
        min(used_at) FILTER (WHERE redriven) - (SELECT t FROM now),
        count(*) FILTER (WHERE used_at > (SELECT t FROM now) - :pace_window)
    FROM rate_limit_slots
    WHERE key = :key AND slot < :size AND used_at > (SELECT t FROM now) - :window
""")
_take_statements: dict[tuple[int, bool], object] = {}


def _take_statement(rings: int, redrive: bool):
    """One statement: pick a free slot in every ring, stamp them all only if all were found."""
    cached = _take_statements.get((rings, redrive))
    if cached is not None:
        return cached
    picks = [
        f"""r{i} AS (
            SELECT key, slot FROM rate_limit_slots
            WHERE key = :k{i} AND slot < :n{i} AND used_at <= {_NOW} - :w{i}
            ORDER BY used_at LIMIT 1 FOR UPDATE SKIP LOCKED)"""
        for i in range(rings)
    ]
    chosen = " UNION ALL ".join(f"SELECT key, slot FROM r{i}" for i in range(rings))
    gate = [
        f"(SELECT count(*) FROM chosen) = {rings}",
        f"""NOT EXISTS (SELECT 1 FROM rate_limits p
                        WHERE p.key = :k0 AND p.paused_until > {_NOW})""",
    ]
    if redrive:
        gate += [
            # Leave the reserve free for live work.
            f"""EXISTS (SELECT 1 FROM rate_limit_slots f
                        WHERE f.key = :k0 AND f.slot < :n0 AND f.used_at <= {_NOW} - :w0
                        OFFSET :reserve LIMIT 1)""",
            # Paced: everyone together below the average rate over the last second or so.
            f"""(SELECT count(*) FROM rate_limit_slots r
                 WHERE r.key = :k0 AND r.slot < :n0 AND r.used_at > {_NOW} - :pace_window)
                < :pace_size""",
            # In a window where live work waited, stay within the share.
            f"""(NOT EXISTS (SELECT 1 FROM rate_limits l
                             WHERE l.key = :k0 AND l.live_waited_at > {_NOW} - :w0)
                 OR (SELECT count(*) FROM rate_limit_slots q
                     WHERE q.key = :k0 AND q.slot < :n0 AND q.redriven
                       AND q.used_at > {_NOW} - :w0) < :quota)""",
        ]
    statement = text(f"""
        WITH now AS (SELECT extract(epoch FROM clock_timestamp()) AS t),
        {", ".join(picks)},
        chosen AS ({chosen}),
        gate AS (SELECT ({" AND ".join(gate)}) AS ok)
        UPDATE rate_limit_slots s SET used_at = {_NOW}, redriven = :redriven
        FROM chosen, gate
        WHERE gate.ok AND s.key = chosen.key AND s.slot = chosen.slot
        RETURNING s.key
    """)
    _take_statements[(rings, redrive)] = statement
    return statement


def _pg_take(conn: Connection, rings: list[Ring], tier_name: str, budget: Budget) -> bool:
    redrive = tier_name == REDRIVE
    params: dict[str, object] = {"redriven": redrive}
    for i, ring in enumerate(rings):
        params.update({f"k{i}": ring.key, f"n{i}": ring.size, f"w{i}": ring.window})
    if redrive:
        params.update(
            {
                "reserve": budget.reserve,
                "quota": budget.redrive_quota,
                "pace_window": budget.pace_window,
                "pace_size": budget.pace_size,
            }
        )
    return bool(conn.execute(_take_statement(len(rings), redrive), params).first())


def _pg_wait(
    conn: Connection, rings: list[Ring], tier_name: str, budget: Budget
) -> tuple[float, bool] | None:
    """(seconds until the refused request may be granted, paused after a 429); None when a
    ring has no rows."""
    paused = conn.execute(_PG_PAUSED_FOR, {"key": rings[0].key}).scalar()
    if paused is not None and paused > 0:
        return float(paused), True
    waits = []
    for i, ring in enumerate(rings):
        skip = budget.reserve if tier_name == REDRIVE and i == 0 else 0
        params = {"key": ring.key, "size": ring.size, "window": ring.window, "skip": skip}
        wait = conn.execute(_PG_RING_WAIT, params).scalar()
        if wait is None:
            return None
        waits.append(float(wait))
    wait = max(waits)
    if tier_name == LIVE:
        conn.execute(_PG_LIVE_WAITED, {"key": rings[0].key})
    elif wait <= 0:
        main = rings[0]
        params = {
            "key": main.key,
            "size": main.size,
            "window": main.window,
            "pace_window": budget.pace_window,
        }
        live_waited, redriven, oldest, paced = conn.execute(_PG_REDRIVE_STATE, params).one()
        wait = _redrive_wait(budget, main, live_waited, redriven, oldest, paced)
    # A slot was free but another process took it first: try again very soon.
    return max(wait, 0.005), False


def _redrive_wait(
    budget: Budget,
    main: Ring,
    live_waited: bool,
    redriven: int,
    oldest_redriven_age: float | None,
    paced: int,
) -> float:
    """Why re-driven work was refused although a slot was free, as seconds to wait."""
    if live_waited and redriven >= budget.redrive_quota:
        # Until its oldest slot of the window leaves it (age is negative: seconds ago).
        return float(oldest_redriven_age or 0.0) + main.window
    if paced >= budget.pace_size:
        return budget.pace_window / budget.pace_size
    return 0.0


# --- One process (the SQLite demo): the same rule, in memory ---------------------------------


class _LocalKey:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rings: dict[str, list[tuple[float, bool]]] = {}
        self._paused_until = 0.0
        self._live_waited_at = -math.inf

    def _ring(self, ring: Ring) -> list[tuple[float, bool]]:
        slots = self._rings.setdefault(ring.key, [])
        if len(slots) < ring.size:
            slots.extend([(-math.inf, False)] * (ring.size - len(slots)))
        return slots

    def take(self, rings: list[Ring], tier_name: str, budget: Budget) -> tuple[float, bool]:
        now = time.time()
        with self._lock:
            if self._paused_until > now:
                return self._paused_until - now, True
            waits: list[float] = []
            picks: list[int] = []
            for i, ring in enumerate(rings):
                used = [at for at, _ in self._ring(ring)[: ring.size]]
                order = sorted(range(ring.size), key=used.__getitem__)
                skip = budget.reserve if tier_name == REDRIVE and i == 0 else 0
                nth = order[min(skip, ring.size - 1)]
                waits.append(used[nth] + ring.window - now)
                picks.append(order[0])
            wait = max(waits)
            main = rings[0]
            if tier_name == REDRIVE and wait <= 0:
                recent = [
                    (at, redriven)
                    for at, redriven in self._ring(main)[: main.size]
                    if at > now - main.window
                ]
                redriven_at = [at for at, redriven in recent if redriven]
                wait = _redrive_wait(
                    budget,
                    main,
                    self._live_waited_at > now - main.window,
                    len(redriven_at),
                    (min(redriven_at) - now) if redriven_at else None,
                    sum(1 for at, _ in recent if at > now - budget.pace_window),
                )
            if wait > 0:
                if tier_name == LIVE:
                    self._live_waited_at = now
                return max(wait, 0.005), False
            for ring, slot in zip(rings, picks, strict=True):
                self._rings[ring.key][slot] = (now, tier_name == REDRIVE)
            return 0.0, False

    def pause(self, seconds: float) -> None:
        with self._lock:
            self._paused_until = max(self._paused_until, time.time() + seconds)

    def paused_for(self) -> float:
        with self._lock:
            return max(self._paused_until - time.time(), 0.0)


_local_keys: dict[str, _LocalKey] = {}
_local_guard = threading.Lock()


def _local(key: str) -> _LocalKey:
    with _local_guard:
        return _local_keys.setdefault(key, _LocalKey())
