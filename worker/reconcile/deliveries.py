"""The task queues' delivery limit, counted by the tasks (classic queues count nothing).

A task message comes back (``redelivered``) when the worker holding it was lost. One that kills
its worker every time would come back forever; past ``RECON_DELIVERY_LIMIT`` returns it is
rejected to the dead-letter queue instead, with a log line that says why.
"""

from __future__ import annotations

import structlog
from sqlalchemy import Engine

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
