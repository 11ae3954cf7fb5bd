"""The opening every piece of reconcile work shares: claim it, open a session, defer when blocked.

One worker at a time per order (or redeem request): the claim is a non-blocking lock, and a worker
that finds it taken says so (``None``) and comes back later. Inside the claim, a spent request
budget (``Throttled``) or a customer still busy when its lock's wait ran out (``CustomerBusy``) is
not a failure and not an attempt: nothing was sent. The block ends there, the claim's ``undo`` puts
back what the block had counted, and ``deferred_for`` says when to come back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from models.session import unit_of_work
from worker.budget.limiter import Throttled, sharing
from worker.reconcile.locks import CustomerBusy, LockScope, lock_scope

#: A customer still busy after the lock's wait: come back after this long.
BUSY_CUSTOMER_DELAY_SECONDS = 5.0


@dataclass
class Claim:
    """Work this worker holds: its locks and its session."""

    locks: LockScope
    session: Session
    #: What a deferral puts back; by default whatever the block has not committed.
    undo: Callable[[], None]
    #: Seconds until the deferred work may go on (None: it was not deferred), and why.
    deferred_for: float | None = None
    deferred_because: str | None = None


@contextmanager
def claimed(
    engine: Engine, take: Callable[[LockScope], bool], *, scope: LockScope | None = None
) -> Iterator[Claim | None]:
    """``take`` the work's lock and open a session for it; ``None`` when another worker has it.

    ``scope``: a lock scope the caller holds for several claims one after the other (a task of
    several orders); each claim's locks are handed on when it ends (``LockScope.handed_on``).
    Without one, the claim has a scope of its own."""
    if scope is None:
        with lock_scope(engine) as locks, _claimed(engine, take, locks) as claim:
            yield claim
        return
    try:
        with _claimed(engine, take, scope) as claim:
            yield claim
    finally:
        scope.handed_on()


@contextmanager
def _claimed(
    engine: Engine, take: Callable[[LockScope], bool], locks: LockScope
) -> Iterator[Claim | None]:
    if not take(locks):
        yield None
        return
    # The budget's takes run on the locks' connection: no checkout of their own per call.
    with unit_of_work(engine) as session, sharing(locks.connection):
        claim = Claim(locks, session, undo=session.rollback)
        try:
            yield claim
        except (Throttled, CustomerBusy) as exc:
            claim.undo()
            claim.deferred_because = str(exc)
            claim.deferred_for = (
                exc.retry_after if isinstance(exc, Throttled) else BUSY_CUSTOMER_DELAY_SECONDS
            )
