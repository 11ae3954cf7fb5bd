"""Where a reconcile task writes down what each call did: the items' new states and their audit
rows, together, once per call.

On PostgreSQL one call's record is one statement on the task's autocommit connection: a
data-modifying ``WITH`` updates the items and inserts their outcome rows, atomic by itself. The
ORM's way took a ``BEGIN``, an insert, an update and a ``COMMIT``: four round trips where this
takes one. SQLite (the embedded demo) cannot update inside a ``WITH``; there the two statements
share one transaction of their own.
"""

from __future__ import annotations

import functools
from typing import Any, cast

import structlog
from sqlalchemy import (
    Connection,
    Engine,
    Table,
    bindparam,
    insert,
    update,
)

from models.base import utcnow
from models.outcomes import Outcome
from models.redemptions import Redemption
from worker.loyalty import Exchange
from worker.observe import metrics
from worker.reconcile.open_work import Bill, OpenItem
from worker.reconcile.outcomes import OUTCOME_COLUMNS, OrderReport, Verdict, outcome_values

log = structlog.get_logger(__name__)

_ITEMS = cast(Table, Redemption.__table__)
_OUTCOMES = cast(Table, Outcome.__table__)
# SQLite's way: one executemany of this, then the outcome rows.
_SET_STATE = (
    update(_ITEMS)
    .where(_ITEMS.c.id == bindparam("item_id"))
    .values(
        state=bindparam("item_state"),
        attempts=bindparam("item_attempts"),
        updated_at=bindparam("item_updated_at"),
    )
)


class Ledger:
    """What one call did, kept until ``commit`` writes it (``discard`` when the call never went:
    a deferral puts nothing on record)."""

    def __init__(self, engine: Engine, connection: Connection | None) -> None:
        self._engine = engine
        #: The task's autocommit connection on PostgreSQL; None in the one-process demo.
        self._connection = connection
        self._items: dict[int, dict[str, Any]] = {}
        self._outcomes: list[dict[str, Any]] = []

    def record(
        self,
        item: OpenItem,
        transaction: Bill,
        verdict: Verdict,
        exchange: Exchange | None,
        report: OrderReport,
    ) -> None:
        """An item's verdict: its new state, its audit row, its count in the report, a log line."""
        item.state = verdict.status
        self._items[item.id] = {
            "item_id": item.id,
            "item_state": verdict.status,
            "item_attempts": item.attempts,
        }
        self.add(
            outcome_values(
                kind=item.kind,
                verdict=verdict,
                attempt=item.attempts,
                exchange=exchange,
                redemption_id=item.platform_ref,
                order_ref=transaction.order_ref,
                customer=item.customer_value,
                event_id=item.event_id,
                transaction=transaction,
            )
        )
        report.statuses[verdict.status] += 1
        if verdict.retry_in is not None:
            report.later(verdict.retry_in)
        log.info(
            "outcome",
            kind=item.kind,
            redemption_id=item.platform_ref,
            order_ref=transaction.order_ref,
            status=verdict.status,
            code=verdict.code,
            attempt=item.attempts,
        )

    def add(self, outcome: dict[str, Any]) -> None:
        """An audit row with no item of its own (a batch's own word)."""
        self._outcomes.append(outcome)

    def commit(self) -> None:
        """Write what was recorded since the last commit, in one go."""
        if not self._outcomes:
            return
        now = utcnow()
        # One time for a call's rows: they are one record.
        items, outcomes = list(self._items.values()), [row | {"at": now} for row in self._outcomes]
        if self._connection is not None:
            self._connection.exec_driver_sql(*_together(items, outcomes, now))
        else:
            with self._engine.begin() as conn:
                if items:
                    conn.execute(_SET_STATE, [item | {"item_updated_at": now} for item in items])
                conn.execute(insert(_OUTCOMES), outcomes)
        for outcome in outcomes:
            metrics.outcome_written(
                kind=outcome["kind"], status=outcome["status"], code=outcome["code"]
            )
        self.discard()

    def discard(self) -> None:
        self._items, self._outcomes = {}, []


def _together(
    items: list[dict[str, Any]], outcomes: list[dict[str, Any]], now: Any
) -> tuple[str, dict[str, Any]]:
    """``WITH changed AS (UPDATE redemptions ... FROM (VALUES ...)) INSERT INTO outcomes ...``
    as SQL for the driver, and its parameters. Written by hand, once per shape: SQLAlchemy
    compiles a statement that carries its rows anew every time (it took a third of a task's
    CPU). A value every row shares (the bill, the call's exchange) is one parameter: psycopg
    converts a query of more than 50 parameters anew every time, and a call's record for
    up to four coupons stays under that."""
    first = outcomes[0]
    shared = tuple(
        name for name in OUTCOME_COLUMNS if all(row[name] == first[name] for row in outcomes)
    )
    params: dict[str, Any] = {"now": now} | {f"c_{name}": first[name] for name in shared}
    for i, item in enumerate(items):
        params |= {f"i{i}": item["item_id"], f"s{i}": item["item_state"]}
        params[f"a{i}"] = item["item_attempts"]
    for j, row in enumerate(outcomes):
        params |= {f"o{j}_{name}": row[name] for name in OUTCOME_COLUMNS if name not in shared}
    return _together_sql(len(items), len(outcomes), shared), params


@functools.lru_cache(maxsize=256)
def _together_sql(items: int, outcomes: int, shared: tuple[str, ...]) -> str:
    def value(j: int, name: str) -> str:
        return f"%(c_{name})s" if name in shared else f"%(o{j}_{name})s"

    rows = ", ".join(
        "(" + ", ".join(value(j, name) for name in OUTCOME_COLUMNS) + ")" for j in range(outcomes)
    )
    insert_rows = f"INSERT INTO outcomes ({', '.join(OUTCOME_COLUMNS)}) VALUES {rows}"
    if not items:
        return insert_rows
    changes = ", ".join(f"(%(i{i})s::bigint, %(s{i})s::text, %(a{i})s::int)" for i in range(items))
    return (
        "WITH changed AS (UPDATE redemptions AS r"
        " SET state = c.state, attempts = c.attempts, updated_at = %(now)s"
        f" FROM (VALUES {changes}) AS c (id, state, attempts) WHERE r.id = c.id RETURNING r.id) "
        + insert_rows
    )
