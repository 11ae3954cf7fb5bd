"""The two PostgreSQL roles: a migration role that owns the schema, a service role that uses it.

The service (worker, beat, web, the CLI) runs as a role that owns no table, so it cannot switch
off the triggers that keep the audit trail append-only, and holds only SELECT and INSERT on
``outcomes`` and ``operator_log``: no UPDATE, DELETE or TRUNCATE to rewrite them with. `recon
migrate`, run as the migration role, grants that set after every upgrade (so a table a later
migration adds is covered) and then checks it; :func:`problems` says what is missing in words an
operator can act on.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

#: Tables the service may read and append to, never change.
APPEND_ONLY = ("outcomes", "operator_log")
#: What the service does to every other table of the schema (never TRUNCATE, never DDL).
READ_WRITE = ("SELECT", "INSERT", "UPDATE", "DELETE")
#: Privileges that would let a role change or empty an append-only table.
REWRITING = ("UPDATE", "DELETE", "TRUNCATE", "TRIGGER")
#: Alembic's bookkeeping: the service may read which revision the database is at, no more.
VERSION_TABLE = "alembic_version"


def grant(*, connection: Connection, role: str) -> None:
    """Give ``role`` exactly the service's privileges on the current schema (idempotent).

    Everything is revoked first, in the same transaction, so a privilege granted by hand (a
    TRUNCATE, an UPDATE on outcomes) does not survive the next `recon migrate`.
    """
    quoted = connection.dialect.identifier_preparer.quote(role)
    tables = _tables(connection)
    connection.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {quoted}"))
    connection.execute(text(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {quoted}"))
    connection.execute(text(f"GRANT USAGE ON SCHEMA public TO {quoted}"))
    for table in tables:
        if table in APPEND_ONLY:
            allowed = "SELECT, INSERT"
        elif table == VERSION_TABLE:
            allowed = "SELECT"
        else:
            allowed = ", ".join(READ_WRITE)
        connection.execute(text(f'GRANT {allowed} ON TABLE public."{table}" TO {quoted}'))
    connection.execute(text(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {quoted}"))


def problems(*, connection: Connection, role: str) -> list[str]:
    """What keeps ``role`` from being a safe service role, one short phrase each; [] if none."""
    found = connection.execute(
        text("SELECT rolsuper FROM pg_roles WHERE rolname = :role"), {"role": role}
    ).first()
    if found is None:
        return [
            f"does not exist: create it as an administrator (CREATE ROLE {role} LOGIN "
            "PASSWORD '...'), then run `recon migrate` again"
        ]
    if found.rolsuper:
        return [f"is a superuser and could switch off the triggers (ALTER ROLE {role} NOSUPERUSER)"]
    owned = list(
        connection.execute(
            text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND pg_has_role(:role, tableowner, 'MEMBER') ORDER BY tablename"
            ),
            {"role": role},
        ).scalars()
    )
    said = []
    if owned:
        said.append(
            f"owns {', '.join(owned)} (directly or through a role it belongs to) and "
            "could rewrite the audit trail: run `recon migrate` as a separate migration role"
        )
    for table in _tables(connection):
        if table == VERSION_TABLE:
            continue
        wanted = ("SELECT", "INSERT") if table in APPEND_ONLY else READ_WRITE
        lacking = [p for p in wanted if not _has(connection, role, table, p)]
        said += [f"lacks {p} on {table}" for p in lacking]
        if table in APPEND_ONLY:
            said += [f"holds {p} on {table}" for p in REWRITING if _has(connection, role, table, p)]
    said += [f"lacks USAGE on the sequence {s}" for s in _unusable_sequences(connection, role)]
    said += _disabled_triggers(connection)
    return said


def _unusable_sequences(connection: Connection, role: str) -> list[str]:
    return list(
        connection.execute(
            text(
                "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public' "
                "AND NOT has_sequence_privilege(:role, "
                "quote_ident(schemaname) || '.' || quote_ident(sequencename), 'USAGE') "
                "ORDER BY sequencename"
            ),
            {"role": role},
        ).scalars()
    )


def _tables(connection: Connection) -> list[str]:
    return list(
        connection.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
        ).scalars()
    )


def _has(connection: Connection, role: str, table: str, privilege: str) -> bool:
    return bool(
        connection.execute(
            text("SELECT has_table_privilege(:role, :table, :privilege)"),
            {"role": role, "table": f'public."{table}"', "privilege": privilege},
        ).scalar_one()
    )


def _disabled_triggers(connection: Connection) -> list[str]:
    """The append-only triggers, which a table owner could have switched off or dropped."""
    expected = [f"{t}_append_only" for t in APPEND_ONLY] + [f"{t}_no_truncate" for t in APPEND_ONLY]
    enabled = set(
        connection.execute(
            text(
                "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
                "AND tgenabled IN ('O', 'A') AND tgname = ANY(:names)"
            ),
            {"names": expected},
        ).scalars()
    )
    return [
        f"the trigger {name} is missing or disabled" for name in expected if name not in enabled
    ]
