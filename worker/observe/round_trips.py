"""Database round trips, counted per process (issue 14): statements, transaction ends and the
pings of pooled connections idle for a while (``models/session.py``), by role (``intake``: a
worker's main process, ``tasks``: its pool processes).

Counted in plain integers by SQLAlchemy's events and added to the ``recon_db_round_trips``
counter in batches: a counter write per statement would cost more than the statement's own
Python. The benchmark reads the counter to print round trips per order and per item.
"""

from __future__ import annotations

import threading
from typing import Any

#: What is counted; "begin" is when SQLAlchemy starts a transaction (psycopg sends BEGIN with
#: the first statement, one more round trip, except in autocommit).
KINDS = ("statement", "begin", "commit", "rollback", "ping")
#: Counts kept in the process before they go to the counter.
FLUSH_EVERY = 64

_lock = threading.Lock()
_listening = False
_role = "intake"
_pending = dict.fromkeys(KINDS, 0)
_unflushed = 0


def _count(kind: str) -> None:
    global _unflushed
    _pending[kind] += 1
    _unflushed += 1
    if _unflushed >= FLUSH_EVERY:
        flush()


def _count_transaction(conn: Any, kind: str) -> None:
    # An autocommit connection still "begins" and "rolls back" in SQLAlchemy's eyes, but sends
    # nothing to the server for it.
    if conn.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
        _count(kind)


def flush() -> None:
    """Add what was counted to the counter (also at the end of each task)."""
    global _unflushed
    from worker.observe.series import series

    counter = series().db_round_trips
    with _lock:
        counts = {kind: n for kind, n in _pending.items() if n}
        for kind in KINDS:
            _pending[kind] = 0
        _unflushed = 0
    for kind, n in counts.items():
        counter.labels(_role, kind).inc(n)


def in_pool(**_: Any) -> None:
    """A pool process just forked: its counts are the tasks', not the intake's."""
    global _role, _unflushed
    _role = "tasks"
    for kind in KINDS:
        _pending[kind] = 0  # the parent's unflushed counts stay the parent's
    _unflushed = 0


def listen() -> None:
    """Count every engine's round trips in this process and the children it forks (once)."""
    global _listening
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from models import session

    with _lock:
        if _listening:
            return
        event.listen(Engine, "before_cursor_execute", lambda *_: _count("statement"))
        event.listen(Engine, "begin", lambda conn: _count_transaction(conn, "begin"))
        event.listen(Engine, "commit", lambda conn: _count_transaction(conn, "commit"))
        event.listen(Engine, "rollback", lambda conn: _count_transaction(conn, "rollback"))
        session.ping_listeners.append(lambda: _count("ping"))
        _listening = True
