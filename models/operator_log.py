"""The operator log: what a person did to messages outside the pipeline, and why.

Rows are only ever added (PostgreSQL refuses UPDATE and DELETE, as for ``outcomes``). One row per
message acted on: ``recon dead replay`` and ``recon dead purge`` write them, with who
(``--operator`` or the login name) and why (``--reason``), the same conventions as the
``operator`` column ``recon resolve`` fills on outcomes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, intpk, utc_time, utcnow

DEAD_REPLAY = "dead.replay"
#: A replay the product refused (the message claimed an origin it may not go back to).
DEAD_REPLAY_REFUSED = "dead.replay_refused"
DEAD_PURGE = "dead.purge"
ACTIONS = (DEAD_REPLAY, DEAD_REPLAY_REFUSED, DEAD_PURGE)


class OperatorAction(Base):
    __tablename__ = "operator_log"

    id: Mapped[intpk]
    at: Mapped[utc_time] = mapped_column(default=utcnow, index=True)
    operator: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    # Where it happened (a queue name) and to what (a message id): plain text, no secrets.
    target: Mapped[str] = mapped_column(String(255))
    subject: Mapped[str | None] = mapped_column(String(128))
    # Facts of the action: original exchange and routing key, death reason and count.
    detail: Mapped[dict[str, Any] | None]
