"""How often a task message came back after its worker was lost: the task queues' delivery limit.

Classic queues (which Celery's countdown retries need) count nothing, so a task that kills its
worker every time would be redelivered forever. Only redeliveries are counted, so the common
path writes nothing.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class TaskDelivery(Base):
    __tablename__ = "task_deliveries"

    task_id: Mapped[str] = mapped_column(String(155), primary_key=True)
    task_name: Mapped[str] = mapped_column(String(80))
    redeliveries: Mapped[int] = mapped_column(Integer)
    last_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
