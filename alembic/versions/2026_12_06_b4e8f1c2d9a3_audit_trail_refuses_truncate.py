"""Audit trail: TRUNCATE refused on PostgreSQL, UPDATE and DELETE refused on SQLite

Revision ID: b4e8f1c2d9a3
Revises: 7c3e51a0b9d2
Create Date: 2026-12-06 22:00:00

Row triggers do not fire on TRUNCATE, so `outcomes` and `operator_log` could be emptied in one
statement; a statement-level trigger refuses it, even to the role that owns the tables. (The
service role holds no TRUNCATE privilege either: `recon migrate` grants it SELECT and INSERT
only, see worker/ops/roles.py.) SQLite had no protection at all; it gets the same refusals.
Note for later migrations: SQLite's batch mode rebuilds a table and drops its triggers, so a
migration that batch-alters one of these tables must create them again.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "b4e8f1c2d9a3"
down_revision: str | None = "7c3e51a0b9d2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY = ("outcomes", "operator_log")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        if dialect == "postgresql":
            # The function the row triggers use already raises "<table> is append-only: % refused".
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_append_only()"
            )
        elif dialect == "sqlite":
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {verb} refused'); END"
                )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table in APPEND_ONLY:
        if dialect == "postgresql":
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        elif dialect == "sqlite":
            for verb in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb}")
