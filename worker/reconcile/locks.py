"""Who may work on what: one worker per order, one request at a time per customer.

On PostgreSQL these are advisory locks on one dedicated connection, so they hold across every
process and host and vanish with the connection if a worker dies. The embedded SQLite demo runs
in one process, where a thread lock is the same guarantee.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

import structlog
from sqlalchemy import Connection, Engine

log = structlog.get_logger(__name__)

# Separate key spaces for the two-integer form of pg advisory locks (models/matching.py has 6).
_ORDER, _CUSTOMER, _REDEEM, _SWEEP = 1, 2, 3, 4


class CustomerBusy(Exception):
    """Another request for the same customer held the lock for too long."""


class LockScope(Protocol):
    #: The scope's own autocommit connection (PostgreSQL), which the request budget's
    #: statements may share; None in the one-process demo.
    connection: Connection | None

    def try_order(self, order_ref: str) -> bool: ...
    def try_open_order(self, order_ref: str) -> bool | None: ...
    def try_redeem(self, request_id: int) -> bool: ...
    def try_sweep(self) -> bool: ...
    def customer(self, key: str) -> AbstractContextManager[None]: ...

    def handed_on(self) -> None:
        """The work that held this scope's locks is over, and the scope goes on to other work:
        every lock it holds goes, at the latest with its next lock statement."""
        ...


class _TryLocks:
    """The non-blocking locks, in one place for both kinds of scope."""

    connection: Connection | None = None

    def _try(self, space: int, key: str) -> bool:
        raise NotImplementedError

    def try_order(self, order_ref: str) -> bool:
        return self._try(_ORDER, order_ref)

    def try_open_order(self, order_ref: str) -> bool | None:
        """``try_order``, where finding out that nothing is open costs more than the lock."""
        return self.try_order(order_ref)

    def try_redeem(self, request_id: int) -> bool:
        return self._try(_REDEEM, str(request_id))

    def try_sweep(self) -> bool:
        return self._try(_SWEEP, "sweep")


# The lock statements go to psycopg as they are (``exec_driver_sql``, ``%(name)s``
# parameters): a task sends several per order, and SQLAlchemy's compile steps for a ``text()``
# cost a fifth of their client CPU. Each is written as what follows ``SELECT``: after a
# ``handed_on`` the scope puts ``pg_advisory_unlock_all()`` in front of it (one round trip for
# both; a target list is evaluated in order, so the unlock comes first), and the lock's answer
# is the statement's last column.

_TRY = "pg_try_advisory_lock(%(space)s, hashtext(%(key)s))"
_UNLOCK_ALL = "pg_advisory_unlock_all(), "

#: The order's lock if it has open items on a stored bill. Otherwise no lock is kept: NULL when
#: it was free (nothing to do), false when another worker holds it (busy, as before).
_OPEN_ORDER = """
    CASE
        WHEN EXISTS (
            SELECT 1 FROM transactions t JOIN redemptions r ON r.transaction_id = t.id
            WHERE t.order_ref = %(key)s AND r.state IN ('pending', 'retrying'))
        THEN pg_try_advisory_lock(%(space)s, hashtext(%(key)s))
        WHEN pg_try_advisory_lock(%(space)s, hashtext(%(key)s))
        THEN CASE WHEN pg_advisory_unlock(%(space)s, hashtext(%(key)s)) THEN NULL::boolean END
        ELSE false
    END
"""


class PostgresLockScope(_TryLocks):
    """Every statement here is one round trip: the lock_timeout is set with the first customer
    lock and reset with the release, and the release is skipped when nothing was taken."""

    def __init__(self, conn: Connection, customer_wait_seconds: float) -> None:
        self._conn = conn
        self._wait_ms = int(customer_wait_seconds * 1000)
        self.connection: Connection | None = conn
        #: Set once a lock or the lock_timeout may need undoing before the connection goes back.
        self.dirty = False
        #: A customer whose block ended, still locked until the next statement of this scope.
        self._held: str | None = None
        #: Set by ``handed_on``: the next lock statement lets go of every lock first.
        self._release_first = False

    def handed_on(self) -> None:
        self._release_first = True

    def _lock(self, select_list: str, params: dict[str, object]) -> object:
        """One lock statement (``SELECT`` + ``select_list``), after letting go of the last
        piece of work's locks if it was handed on; its answer is the last column."""
        self.dirty = True
        return self._conn.exec_driver_sql(self._select(select_list), params).one()[-1]

    def _select(self, select_list: str) -> str:
        if not self._release_first:
            return "SELECT " + select_list
        # Released before the lock is tried, even if the statement fails (advisory locks ignore
        # rollback); the customer lock kept for a next block goes with the rest.
        self._release_first = False
        self._held = None
        return "SELECT " + _UNLOCK_ALL + select_list

    def _try(self, space: int, key: str) -> bool:
        return bool(self._lock(_TRY, {"space": space, "key": key}))

    def try_open_order(self, order_ref: str) -> bool | None:
        """``try_order`` if the order has open items on a stored bill; None (no lock kept)
        when it has none and no other worker holds it: one statement for the common "already
        done" case."""
        got = self._lock(_OPEN_ORDER, {"space": _ORDER, "key": order_ref})
        return None if got is None else bool(got)

    @contextmanager
    def customer(self, key: str) -> Iterator[None]:
        """The customer's lock, waited for up to the scope's wait. It is let go with the next
        customer's lock or the scope's release, whichever comes first (the moments after the
        block are a commit and the end of the scope): one round trip less per customer."""
        if self._held == key:
            # Still ours (the same customer's coupons, then its points): keep it.
            self._held = None
            try:
                yield
            finally:
                self._held = key
            return
        params = {"space": _CUSTOMER, "key": key, "wait": f"{self._wait_ms}ms"}
        self.dirty = True
        # set_config runs before the lock in the same statement, so the wait is bounded.
        # Always within a claim, after its own lock statement: nothing handed on is pending.
        statement = "SELECT set_config('lock_timeout', %(wait)s, false), "
        if self._held is not None:
            statement += "pg_advisory_unlock(%(space)s, hashtext(%(held)s)), "
            params["held"] = self._held
        statement += "pg_advisory_lock(%(space)s, hashtext(%(key)s))"
        # Unlocked before the statement ran, even if it fails (advisory locks ignore rollback).
        self._held = None
        try:
            self._conn.exec_driver_sql(statement, params)
        except Exception as exc:
            raise CustomerBusy(f"customer {key} stayed busy for {self._wait_ms} ms") from exc
        try:
            yield
        finally:
            self._held = key


class _LocalRegistry:
    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[int, str], threading.Lock] = {}

    def get(self, space: int, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((space, key), threading.Lock())


_LOCAL = _LocalRegistry()


class LocalLockScope(_TryLocks):
    def __init__(self, customer_wait_seconds: float) -> None:
        self._held: list[threading.Lock] = []
        self._wait = customer_wait_seconds

    def _try(self, space: int, key: str) -> bool:
        lock = _LOCAL.get(space, key)
        if lock.acquire(blocking=False):
            self._held.append(lock)
            return True
        return False

    @contextmanager
    def customer(self, key: str) -> Iterator[None]:
        lock = _LOCAL.get(_CUSTOMER, key)
        if not lock.acquire(timeout=self._wait):
            raise CustomerBusy(f"customer {key} stayed busy for {self._wait} s")
        try:
            yield
        finally:
            lock.release()

    def release_all(self) -> None:
        while self._held:
            self._held.pop().release()

    def handed_on(self) -> None:
        self.release_all()


@contextmanager
def lock_scope(engine: Engine, *, customer_wait_seconds: float = 30.0) -> Iterator[LockScope]:
    """Locks taken inside are released when the block ends (or the process dies)."""
    if engine.dialect.name != "postgresql":
        local = LocalLockScope(customer_wait_seconds)
        try:
            yield local
        finally:
            local.release_all()
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        scope = PostgresLockScope(conn, customer_wait_seconds)
        try:
            yield scope
        finally:
            # Closing returns the connection to the pool; session-level advisory locks would
            # survive that, so drop them all first (one round trip: two statements, no
            # parameters, sent as one simple query).
            try:
                if scope.dirty:
                    conn.exec_driver_sql("SELECT pg_advisory_unlock_all(); RESET lock_timeout")
            except Exception as exc:
                # The connection broke (a database restart invalidates it): discarding it ends
                # its server session, and every advisory lock with it. The block's own error, if
                # any, is the one worth raising; a lost unlock is not a failed task.
                log.warning("locks.release_on_broken_connection", error=type(exc).__name__)
                conn.invalidate()
