"""The task queues' delivery limit: what the worker records before it dead-letters a task.

A task message comes back (``redelivered``) when the worker holding it was lost; the quorum task
queue counts the returns (``x-delivery-count``). One that kills its worker every time would come
back forever; past ``RECON_DELIVERY_LIMIT`` returns the task rejects it to the dead-letter queue
instead, with a log line that says why, and a row that says the worker did it
(``models/dead_tasks.py``): only such a message may be replayed to a task queue.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import Engine

from models.dead_tasks import record_dead_task, task_fingerprint
from models.session import unit_of_work

log = structlog.get_logger(__name__)


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
