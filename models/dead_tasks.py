"""Task messages the worker dead-lettered itself, so a replay can tell them from forgeries.

A task message that keeps coming back past the delivery limit is rejected to the dead-letter
queue by the worker (``worker/reconcile/tasks.py``), which first writes a row here: the queue the
message came from and a fingerprint of what it asks for (task name, task id, arguments).
``recon dead replay`` sends a task message back to a task queue only when its fingerprint is on
record and not yet replayed: anyone who may publish can put any headers on a message, but not a
row in this table.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from sqlalchemy import String, Text, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from models.base import Base, UTCDateTime, intpk, utc_time, utcnow


class DeadTask(Base):
    __tablename__ = "dead_tasks"

    id: Mapped[intpk]
    at: Mapped[utc_time] = mapped_column(default=utcnow)
    fingerprint: Mapped[str] = mapped_column(String(64), index=True)
    #: The queue the broker delivered it from (its routing key on the task exchange).
    queue: Mapped[str] = mapped_column(String(255))
    task_name: Mapped[str] = mapped_column(String(80))
    task_id: Mapped[str] = mapped_column(String(155))
    reason: Mapped[str] = mapped_column(Text)
    replayed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


def task_fingerprint(*, task_name: str, task_id: str, args: Any, kwargs: Any) -> str:
    """SHA-256 of what a task message asks for, the same from the worker's request and from the
    message's decoded body (JSON primitives, keys sorted)."""
    asked = [task_name, task_id, list(args or ()), dict(kwargs or {})]
    canonical = json.dumps(asked, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def record_dead_task(
    session: Session, *, fingerprint: str, queue: str, task_name: str, task_id: str, reason: str
) -> None:
    """Note that the worker is about to dead-letter this task message (caller commits)."""
    session.add(
        DeadTask(
            fingerprint=fingerprint,
            queue=queue[:255],
            task_name=task_name[:80],
            task_id=task_id[:155],
            reason=reason,
        )
    )


def recorded_dead_task(session: Session, *, fingerprint: str) -> DeadTask | None:
    """The worker's record of dead-lettering a message asking exactly this, not yet replayed."""
    return session.scalars(
        select(DeadTask)
        .where(DeadTask.fingerprint == fingerprint, DeadTask.replayed_at.is_(None))
        .order_by(DeadTask.id)
        .limit(1)
    ).first()


def mark_replayed(session: Session, *, record_id: int) -> bool:
    """Use the record up: one dead-lettering, one replay (caller commits). False if it was."""
    done = session.execute(
        update(DeadTask)
        .where(DeadTask.id == record_id, DeadTask.replayed_at.is_(None))
        .values(replayed_at=utcnow())
    )
    return bool(getattr(done, "rowcount", 0))
