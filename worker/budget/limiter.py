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
  work; when no live work waits, re-driven work may use the whole budget. Re-driven work waits
  in place less (``redrive_max_wait_seconds``), but sleeps that out before it goes back to the
  queue when its slot is nearer than live work's wait: sent back at once, every queued re-driven
  task cycled through the broker once a second while the ring was full.
* A 429 pauses the key: ``pause()`` stores ``paused_until`` for the key, every take checks it,
  so no process sends on the key until the platform's ``Retry-After`` has passed.
* Deferrals are spread (issue 14). A live request refused for longer than ``max_wait_seconds``
  goes back to the queue with a time of its own: the first at the oldest slot's expiry, each
  next one at the expiry of the next slot to free after the last time handed out
  (``rate_limits.deferred_until``), so deferred requests come back in the pattern the ring
  frees, one per slot; once every slot of the ring is spoken for, a slot's interval
  (``window / limit``) apart. Tasks all given the oldest slot's time came back as a herd that
  one slot could serve and the rest re-deferred, while the slots freed after them went unused.
  A return time is not a reservation: whoever asks when a slot is free takes it. Each comes
  back half its ``max_wait_seconds`` early and waits for its slot in place, so the slot is
  taken the moment it frees.
* Even once saturated (issue 14). A ring spent in a burst frees in a burst a window later, so
  the platform's window that opens just after a burst began misses up to a guard's worth of the
  burst (at 130 calls/s, 3 % of 1,000/min) on every turn; and a ring filled unevenly (a
  backlog's first calls go out slowly while the intake stores it, faster after) replays that
  turn as long as the backlog lasts (81 % in the lowest window at 6,000/min). So once more work
  is open than one turn of the ring serves (``demand`` counts more open calls than the ring
  holds), live work is paced like re-driven work (at most ``pace_size`` live takes in
  ``pace_window``, the limit's average rate; re-driven takes do not count, so a backfill never
  slows live work) for two turns of the ring, and again while the backlog lasts. A live
  request asks, taken or refused, at most once a second per process and only while no pace
  runs: paced from the first request, the ring fills evenly and every 60 s window
  holds the limit (less the guard). Paced only once the ring was full (the first version), the
  turn that re-stamped it left the windows across it at 60 %. A backlog that one turn serves
  still goes at once. Demand is counted from the open work, not from deferred tasks: one call
  can have two tasks (an order's bill's, and the one its points redeem sends on), and counting
  tasks once paced issue 10's dependent pairs, whose second turn then took 99 s instead of 60 s.

Round trips: a take is one statement on an autocommit connection; inside reconcile work it
runs on the connection that holds the work's advisory locks (``sharing``), so it costs no
checkout of its own.

Where it lives: this module is what callers use (``acquire``, ``pause``, ``tier``); the rule's
arithmetic is ``rule.py``, its statements ``postgres.py``, and the embedded SQLite demo, which runs
in one process, applies the same rule in memory (``memory.py``).

The functions ``slot_taken``, ``slot_waited``, ``deferred``, ``platform_throttled`` and
``customer_busy`` are called once per event; they are where metrics hook in.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import structlog
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from worker.budget import memory, postgres
from worker.budget.rule import LIVE, REDRIVE, TIERS, WINDOW_SECONDS, Budget, Ring
from worker.observe import metrics

log = structlog.get_logger(__name__)

#: How long every process pauses after a 429 that carries no ``Retry-After``.
DEFAULT_PAUSE_SECONDS = 5.0
#: How often one process counts the open work while no pace runs and its live requests go out...
DEMAND_EVERY_SECONDS = 1.0
#: ... and how long it leaves the count after one that found less than half a turn open: a
#: budget far above its traffic (the usual case) costs a bounded count every few seconds.
DEMAND_IDLE_SECONDS = 5.0

_tier: ContextVar[str] = ContextVar("recon_rate_limit_tier", default=LIVE)
_shared: ContextVar[Connection | None] = ContextVar("recon_rate_limit_connection", default=None)


@contextmanager
def sharing(conn: Connection | None) -> Iterator[None]:
    """Inside, the budget's statements run on ``conn`` (an autocommit connection of the same
    engine, held by the caller) instead of checking out one of their own."""
    token = _shared.set(conn)
    try:
        yield
    finally:
        _shared.reset(token)


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
    #: The calls open work still needs, counted up to a cap: ``(connection, cap) -> count``
    #: (``worker/reconcile/open_calls.py``). None: live work is never paced.
    demand: Callable[[Connection, int], int] | None = None
    _ready: set[str] = field(default_factory=set, init=False, repr=False)
    _demand_next: float = field(default=-math.inf, init=False, repr=False)

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
            return memory.key(self.key).take(rings, tier_name, budget)
        for _ in range(2):
            with self._connection() as conn:
                self._ensure(conn, rings)
                if postgres.take(conn, rings, tier_name, budget):
                    return 0.0, False
                answer = postgres.wait(conn, rings, tier_name, budget)
                if answer is not None:
                    return answer
            # The ring's rows are gone (a test emptied the table): set them up again.
            self._ready.clear()
        raise RuntimeError("the rate limiter's slots could not be set up")

    def _ask_demand(self) -> bool:
        """At most once a second per process (every ``DEMAND_IDLE_SECONDS`` after a count that
        found less than half a turn): the count is bounded, but requests go out by the hundred a
        second."""
        if self.demand is None:
            return False
        now = time.monotonic()
        if now < self._demand_next:
            return False
        self._demand_next = now + DEMAND_EVERY_SECONDS
        return True

    def _open_beyond_a_turn(self, conn: Connection, main: Ring) -> bool:
        """More open calls than one turn of the ring serves ("Even once saturated")."""
        assert self.demand is not None
        open_calls = self.demand(conn, main.size + 1)
        if open_calls <= main.size // 2:
            self._demand_next = time.monotonic() + DEMAND_IDLE_SECONDS
        return open_calls > main.size

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
                if tier_name == LIVE:
                    self._pace_after_take()
                slot_taken(tier_name)
                if waited:
                    slot_waited(tier_name, waited)
                return
            near = waited + wait > limit and wait <= self.max_wait_seconds
            if near and not paused and tier_name == REDRIVE and waited < limit:
                # A slot comes within live work's wait in place, but past re-driven work's:
                # sleep out the rest of re-driven work's allowance and ask once more. Sent back
                # at once, every queued re-driven task cycled through the broker once a second
                # while the ring was full (a hundred deferrals a second), and live tasks waited
                # in RabbitMQ behind that churn.
                time.sleep(limit - waited)
                waited = limit
                continue
            if paused or waited + wait > limit:
                if not paused and tier_name == LIVE:
                    wait = self._deferral(wait)
                deferred(tier_name, wait)
                raise Throttled(wait)
            time.sleep(wait)
            waited += wait

    def _deferral(self, wait: float) -> float:
        """Seconds until this refused request's own return time (see "Deferrals are spread")."""
        budget = self.budget
        main = budget.rings(self.key, LIVE)[0]
        if not self._postgres:
            due = memory.key(self.key).defer(main, wait, budget.slot_interval)
        else:
            with self._connection() as conn:
                due = postgres.defer(conn, main, wait, budget.slot_interval)
        self._pace_if_backlogged()
        # Back a little before its slot frees, to wait for it in place: a task due exactly then
        # is late by however long its worker takes to pick it up, and the slot stays empty.
        return max(due - self.max_wait_seconds / 2, 0.005)

    def _pace_after_take(self) -> None:
        """The slot is taken: a failed count must not fail the request that holds it (the next
        request asks again)."""
        try:
            self._pace_if_backlogged()
        except SQLAlchemyError as exc:
            log.warning("ratelimit.demand_unknown", error=type(exc).__name__)

    def _pace_if_backlogged(self) -> None:
        """At most once a second per process, on a live request (taken or refused): if more
        calls are open than a turn serves, pace live work from now on, so the ring fills evenly
        ("Even once saturated" in postgres.py). The count is made only while no pace runs."""
        if not self._ask_demand():
            return
        # The ring only once the count is due: this runs after every live take.
        main = self.budget.rings(self.key, LIVE)[0]
        if not self._postgres:
            state = memory.key(self.key)
            if state.could_pace(main):
                with self.engine.connect() as conn:
                    if self._open_beyond_a_turn(conn, main):
                        state.pace(main)
            return
        with self._connection() as conn:
            if postgres.could_pace(conn, main) and self._open_beyond_a_turn(conn, main):
                postgres.pace(conn, main)

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        shared = _shared.get()
        if shared is not None and shared.engine is self.engine and not shared.closed:
            yield shared
            return
        # Every statement of the budget stands alone (each take is one atomic statement), so
        # no transaction: no BEGIN and COMMIT round trips.
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield conn

    def pause(self, retry_after: float | None) -> float:
        """The platform answered 429: no process sends on this key before its time is up."""
        seconds = DEFAULT_PAUSE_SECONDS if retry_after is None else max(retry_after, 0.0)
        if self._postgres:
            with self.engine.begin() as conn:
                postgres.pause(conn, self.key, seconds)
        else:
            memory.key(self.key).pause(seconds)
        platform_throttled(seconds, retry_after)
        log.warning("ratelimit.paused", seconds=round(seconds, 3), retry_after=retry_after)
        return seconds

    def paused_for(self) -> float:
        """Seconds left of a pause after a 429 (0.0 when none)."""
        if not self._postgres:
            return memory.key(self.key).paused_for()
        with self.engine.connect() as conn:
            return postgres.paused_for(conn, self.key)

    def _ensure(self, conn: Connection, rings: list[Ring]) -> None:
        for ring in rings:
            if ring.key in self._ready:
                continue
            postgres.ensure(conn, ring)
            self._ready.add(ring.key)
