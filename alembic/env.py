"""Alembic environment: the URL comes from the caller, or from RECON_DATABASE_URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

import models
from models.session import build_engine
from worker.settings import load_settings

config = context.config
target_metadata = models.Base.metadata


def _url() -> str:
    return config.attributes.get("database_url") or load_settings().database_url


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
    )


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    # The migrations are what creates a new SQLite file.
    engine = build_engine(_url(), create=True)
    with engine.connect() as connection:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
