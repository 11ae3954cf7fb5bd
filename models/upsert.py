"""INSERT ... ON CONFLICT for both PostgreSQL and the embedded SQLite."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert(session: Session, model: Any) -> Any:
    """The dialect's own ``insert``, which knows ``on_conflict_do_nothing``/``_do_update``."""
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(model)
