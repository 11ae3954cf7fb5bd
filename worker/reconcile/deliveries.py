"""The task queues' delivery limit, counted by the tasks (classic queues count nothing).

A task message comes back (``redelivered``) when the worker holding it was lost. One that kills
its worker every time would come back forever; past ``RECON_DELIVERY_LIMIT`` returns it is
rejected to the dead-letter queue instead, with a log line that says why, and a row that says
the worker did it (``models/dead_tasks.py``): only such a message may be replayed to a task queue.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import Engine

from models.dead_tasks import record_dead_task, task_fingerprint
from models.deliveries import TaskDelivery
from models.session import unit_of_work
from models.upsert import insert

log = structlog.get_logger(__name__)


def count_redelivery(engine: Engine, *, task_id: str, task_name: str) -> int:
    """Record one more return of this task message; return how many there have been."""
    with unit_of_work(engine) as session:
        statement = insert(session, TaskDelivery).values(
            task_id=task_id[:155], task_name=task_name[:80], redeliveries=1
        )
        statement = statement.on_conflict_do_update(
            index_elements=["task_id"],
            set_={"redeliveries": TaskDelivery.redeliveries + 1},
        ).returning(TaskDelivery.redeliveries)
        count = int(session.execute(statement).scalar_one())
        session.commit()
    return count


def record_dead_letter(
    engine: Engine,
    *,
    task_name: str,
    task_id: str,
    args: Any,
    kwargs: Any,
    queue: str,
    reason: str,
) -> None:
    """Put on record that the worker dead-letters this task message, before it does: `recon dead
    replay` sends back to a task queue only what is on record here."""
    fingerprint = task_fingerprint(task_name=task_name, task_id=task_id, args=args, kwargs=kwargs)
    with unit_of_work(engine) as session:
        record_dead_task(
            session, fingerprint=fingerprint, queue=queue, task_name=task_name, task_id=task_id,
            reason=reason,
        )  # fmt: skip
        session.commit()
