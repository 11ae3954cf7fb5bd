"""The backfill: re-drive every redemption that has its bill but no success yet.

Keyset pagination (``id > last``) in chunks keeps memory flat at any size. It never touches
``unknown`` (an operator decides) and touches ``failed`` only when asked to.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import structlog
from sqlalchemy import Engine, Select, func, select, update
from sqlalchemy.orm import Session

from models.redemptions import FAILED, OPEN_STATES, PENDING, SUCCEEDED, Redemption
from models.session import unit_of_work
from worker.loyalty import LoyaltyClient
from worker.observe import metrics
from worker.reconcile.orders import reconcile_order
from worker.reconcile.outcomes import Policy

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Options:
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    kind: str | None = None
    dry_run: bool = False
    include_failed: bool = False
    chunk_size: int = 500

    @property
    def states(self) -> tuple[str, ...]:
        return (*OPEN_STATES, FAILED) if self.include_failed else OPEN_STATES


@dataclass(frozen=True)
class Candidate:
    id: int
    kind: str
    redemption_id: str
    order_ref: str
    state: str
    attempts: int


@dataclass
class Summary:
    redriven: int = 0
    succeeded: int = 0
    failed: int = 0
    still_open: int = 0
    orders: int = 0
    planned: list[Candidate] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {
            "redriven": self.redriven,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "still_open": self.still_open,
            "orders": self.orders,
        }


def _candidates(options: Options) -> Select[Redemption]:
    query = select(Redemption).where(
        Redemption.transaction_id.is_not(None), Redemption.state.in_(options.states)
    )
    if options.since is not None:
        query = query.where(Redemption.created_at >= options.since)
    if options.until is not None:
        query = query.where(Redemption.created_at < options.until)
    if options.kind is not None:
        query = query.where(Redemption.kind == options.kind)
    return query


def count_candidates(session: Session, options: Options) -> int:
    """How many redemptions a run with these options would re-drive (for a progress bar)."""
    subquery = _candidates(options).with_only_columns(Redemption.id).subquery()
    return session.scalar(select(func.count()).select_from(subquery)) or 0


def chunks(engine: Engine, options: Options) -> Iterator[list[Candidate]]:
    """Candidates in id order, ``chunk_size`` at a time, one short transaction per chunk."""
    last_id = 0
    while True:
        with unit_of_work(engine) as session:
            rows = session.scalars(
                _candidates(options)
                .where(Redemption.id > last_id)
                .order_by(Redemption.id)
                .limit(options.chunk_size)
            ).all()
            chunk = [
                Candidate(
                    row.id, row.kind, row.platform_ref, row.order_ref, row.state, row.attempts
                )
                for row in rows
            ]
        if not chunk:
            return
        last_id = chunk[-1].id
        yield chunk


def run_backfill(
    engine: Engine,
    client: LoyaltyClient | None,
    *,
    policy: Policy | None,
    options: Options,
    on_retry: Callable[[str, float | None], None] | None = None,
    progress: Callable[[int], None] | None = None,
    hand_off: Callable[[str], None] | None = None,
) -> Summary:
    """Re-drive the candidates chunk by chunk; ``on_retry`` hands back orders still retrying.

    With ``hand_off`` the orders are not reconciled here but handed to it (the nightly task
    puts them on the re-drive queue); the summary then counts what was handed over."""
    if not options.dry_run and hand_off is None and (client is None or policy is None):
        raise ValueError("a backfill that sends needs a client and a retry policy")
    summary = Summary()
    for chunk in chunks(engine, options):
        if options.dry_run:
            summary.planned.extend(chunk)
            summary.redriven += len(chunk)
        else:
            _redrive(engine, client, chunk, policy, summary, on_retry, hand_off)
        if progress is not None:
            progress(len(chunk))
        log.info("backfill.progress", **summary.as_dict())
    log.info("backfill.done", dry_run=options.dry_run, **summary.as_dict())
    return summary


def _redrive(
    engine: Engine,
    client: LoyaltyClient | None,
    chunk: list[Candidate],
    policy: Policy | None,
    summary: Summary,
    on_retry: Callable[[str, float | None], None] | None,
    hand_off: Callable[[str], None] | None = None,
) -> None:
    ids = [candidate.id for candidate in chunk]
    with unit_of_work(engine) as session:
        # A fresh round of attempts: the reconcile only works on pending and retrying items.
        session.execute(
            update(Redemption)
            .where(Redemption.id.in_(ids), Redemption.state.in_((*OPEN_STATES, FAILED)))
            .values(state=PENDING, attempts=0)
        )
        session.commit()
    for kind, count in Counter(candidate.kind for candidate in chunk).items():
        metrics.backfill_redriven(kind, count)
    summary.redriven += len(ids)
    orders = sorted({candidate.order_ref for candidate in chunk})
    summary.orders += len(orders)
    if hand_off is not None:
        for order_ref in orders:
            hand_off(order_ref)
        summary.still_open += len(ids)
        return
    assert client is not None
    assert policy is not None
    for order_ref in orders:
        report = reconcile_order(engine, client, order_ref=order_ref, policy=policy)
        if (report.busy or report.retry_in is not None) and on_retry is not None:
            on_retry(order_ref, report.retry_in)
    with unit_of_work(engine) as session:
        states = Counter(
            dict(
                session.execute(
                    select(Redemption.state, func.count())
                    .where(Redemption.id.in_(ids))
                    .group_by(Redemption.state)
                ).all()
            )
        )
    summary.succeeded += states[SUCCEEDED]
    summary.failed += states[FAILED]
    summary.still_open += sum(states[state] for state in OPEN_STATES)
