"""Engine and session factory, built from settings by a function, never at import."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from sqlalchemy import Engine, TextClause, create_engine, event, exc
from sqlalchemy.dialects.postgresql import psycopg as postgres_psycopg
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.orm import Session, sessionmaker

from models.urls import HostListError, has_host_list, query_form, session_attrs_problem

#: Every PostgreSQL connection gives up connecting after this long, so nothing waits unbounded
#: for a server that is not there.
CONNECT_TIMEOUT_SECONDS = 5


def normalise_url(url: str) -> str:
    """Let ops write ``postgresql://``; we always drive PostgreSQL with psycopg 3. A libpq host
    list (``h1:5432,h2:5433``) becomes the query form SQLAlchemy reads (models/urls.py)."""
    parsed = make_url(query_form(url))
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def shown_url(url: str) -> str:
    """``url`` fit for a message: its password masked, whichever form it names its hosts in."""
    try:
        return unquote(make_url(normalise_url(url)).render_as_string(hide_password=True))
    except (exc.ArgumentError, ValueError):
        return "RECON_DATABASE_URL"


def primary_not_writable(url: str) -> str:
    """``url`` for connections that make themselves read-only (the web page's): libpq's
    ``read-write`` would refuse every host for them, since it reads the session's own
    ``default_transaction_read_only``; ``primary`` still picks the primary, by recovery state."""
    parsed = make_url(normalise_url(url))
    if parsed.query.get("target_session_attrs") != "read-write":
        return url
    parsed = parsed.update_query_dict({"target_session_attrs": "primary"})
    return parsed.render_as_string(hide_password=False)


def database_url_problem(url: str) -> str | None:
    """Why SQLAlchemy cannot use ``url`` with the drivers we ship, in one line; None when it can."""
    try:
        parsed = make_url(normalise_url(url))
        dialect = parsed.get_dialect()
    except HostListError as error:
        return str(error)
    except (exc.ArgumentError, exc.NoSuchModuleError, ValueError):
        if has_host_list(url):
            return "the list of hosts cannot be read (example: " + _MULTI_HOST_EXAMPLE + ")"
        return (
            "not a database URL SQLAlchemy can use (examples: "
            "postgresql://user:password@host:5432/recon, sqlite:///recon.sqlite3)"
        )
    if parsed.get_backend_name() not in ("postgresql", "sqlite"):
        return (
            f"{parsed.get_backend_name()} is not supported: use PostgreSQL "
            "(postgresql://user:password@host:5432/recon) or SQLite for the demo"
        )
    try:
        dialect.import_dbapi()
    except ImportError:
        return (
            f"the driver {parsed.get_driver_name()!r} is not installed: leave the driver out "
            "(postgresql://...) to use psycopg 3, which is"
        )
    if parsed.get_backend_name() == "postgresql":
        return _hosts_problem(parsed, dialect)
    return None


_MULTI_HOST_EXAMPLE = (
    "postgresql://user:password@db1:5432,db2:5432/recon?target_session_attrs=read-write"
)


def _hosts_problem(parsed: Any, dialect: Any) -> str | None:
    """A primary with a standby: hosts and ports that pair up, and a session attribute that
    keeps writers off the standby."""
    try:
        _, options = dialect().create_connect_args(parsed)
    except (exc.ArgumentError, ValueError):
        # SQLAlchemy's text quotes the ports: harmless, but ours says what to do.
        return f"the hosts and ports do not pair up (example: {_MULTI_HOST_EXAMPLE})"
    hosts = len(str(options.get("host") or "").split(","))
    attrs = options.get("target_session_attrs")
    return session_attrs_problem(hosts=hosts, attrs=None if attrs is None else str(attrs))


class MissingDatabase(ValueError):
    """A SQLite file that does not exist: connecting would create an empty one."""


def _check_sqlite_file(url: str) -> None:
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    if not Path(database).exists():
        raise MissingDatabase(
            f"the SQLite database {database} does not exist (in {Path.cwd()}): run "
            "`recon migrate` to create it, `recon demo` for the demo's, or set "
            "RECON_DATABASE_URL"
        )


def _make_sqlite_folder(url: str) -> None:
    # The embedded default lives in a folder of its own (recon-demo/); migrating creates it.
    database = make_url(url).database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def build_engine(url: str, *, create: bool = False, **options: Any) -> Engine:
    """An engine for ``url``. A SQLite file must exist unless ``create`` (the migrations):
    opening a missing one would leave an empty file behind a failed command."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        if not create:
            _check_sqlite_file(url)
        else:
            _make_sqlite_folder(url)
        # The embedded demo shares one file between threads; WAL lets readers run beside
        # the writer, and a generous busy timeout turns lock contention into waiting.
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **options
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    options.setdefault("pool_size", 5)
    options.setdefault("max_overflow", 5)
    options.setdefault("pool_timeout", 10)
    connect_args = options.setdefault("connect_args", {})
    connect_args.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
    engine = create_engine(url, **options)
    event.listen(engine, "handle_error", _server_gone)
    if not options.get("pool_pre_ping"):
        _ping_when_idle(engine)
    return engine


#: A pooled connection idle at least this long is asked "are you there?" before it is handed out.
#: SQLAlchemy's ``pool_pre_ping`` asks at every checkout: a round trip each time, three per order
#: in a reconcile task, 18 % of its round trips. A connection in use a moment ago was there a
#: moment ago; if the server went away since, its next statement fails as a disconnect, the pool
#: drops it and every older one, and the task or the intake retries (``database_unavailable``).
PING_AFTER_IDLE_SECONDS = 1.0
#: Called after each ping (the round-trip counter in worker/observe/round_trips.py listens).
ping_listeners: list[Callable[[], None]] = []


def _ping_when_idle(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn: Any, record: Any) -> None:
        record.info["recon_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.pop("recon_idle_since", None)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_SECONDS:
            return  # new, or in use a moment ago
        for listener in ping_listeners:
            listener()
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as error:
            # The pool discards this connection and checks out another (up to three tries).
            raise exc.DisconnectionError(
                f"pooled connection lost: {type(error).__name__}"
            ) from error


#: SQLSTATEs that say the server will not take this session's work again: read_only_sql_transaction
#: (a primary demoted or fenced read-only under a live session, after a failover), admin_shutdown,
#: crash_shutdown, cannot_connect_now. pool_pre_ping only asks "are you there?", and a demoted
#: server answers yes; so these count as a disconnect: the pool drops this connection and every
#: older one, and the next checkout walks the host list to the server that is primary now. The
#: error itself still reaches the caller, which retries (database_unavailable below).
_SERVER_GONE_STATES = frozenset({"25006", "57P01", "57P02", "57P03"})


def _server_gone(context: ExceptionContext) -> None:
    state = getattr(context.original_exception, "sqlstate", None)
    if state in _SERVER_GONE_STATES:
        context.is_disconnect = True


_engines: dict[tuple[str, int | None], Engine] = {}
_engines_lock = threading.Lock()


def engine_for(url: str, *, statement_timeout_ms: int | None = None) -> Engine:
    """One engine (and pool) per URL and statement time-out per process."""
    key = (url, statement_timeout_ms)
    with _engines_lock:
        if key not in _engines:
            options: dict[str, Any] = {}
            if statement_timeout_ms is not None and not normalise_url(url).startswith("sqlite"):
                options["connect_args"] = {
                    "options": f"-c statement_timeout={statement_timeout_ms}"
                }
            _engines[key] = build_engine(url, **options)
        return _engines[key]


# SQLSTATE classes that say "this statement's data is wrong", as opposed to "the server is not
# there, not ready, shutting down, out of resources or too slow": data exceptions, integrity.
_DATA_CLASSES = ("22", "23")


def database_unavailable(error: BaseException) -> bool:
    """Whether ``error`` is the database being unavailable rather than the data being refused.

    Unavailable (retry later, lose nothing): refused or lost connections, connect and statement
    time-outs, admin shutdown, an invalidated pooled connection, pool exhaustion, and every
    server error outside the data and integrity classes (a missing table after a botched deploy
    is not the message's fault either). Refused (never retry): data and integrity errors, and
    anything raised before a statement reached the server (encoding, serialisation, recursion).
    """
    if isinstance(error, exc.DisconnectionError | exc.TimeoutError | exc.PendingRollbackError):
        return True
    if isinstance(error, exc.DBAPIError):
        if error.connection_invalidated:
            return True
        if isinstance(error, exc.DataError | exc.IntegrityError):
            return False
        state = getattr(error.orig, "sqlstate", None)
        if state is not None:
            return not str(state).startswith(_DATA_CLASSES)
        return isinstance(error, exc.OperationalError | exc.InterfaceError)
    return False


def forget_engines_after_fork() -> None:
    """In a forked child: drop the parent's pooled connections without closing them.

    Closing would end the parent's sessions on the server; the child opens its own.
    """
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose(close=False)


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def unit_of_work(engine: Engine) -> Iterator[Session]:
    """A session that rolls back unless the block commits it."""
    session = session_factory(engine)()
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def is_postgres(engine_or_session: Engine | Session) -> bool:
    bind = (
        engine_or_session.get_bind()
        if isinstance(engine_or_session, Session)
        else engine_or_session
    )
    return bind.dialect.name == "postgresql"


def driver_sql(statement: TextClause) -> str:
    """A PostgreSQL ``text()`` statement as psycopg's own SQL (``%(name)s`` parameters), for
    ``Connection.exec_driver_sql``: the statements a task sends for every call skip SQLAlchemy's
    cache-key and compile steps (about a fifth of their client CPU), and keep its error handling
    and connection invalidation. Compiles each time: the caller keeps the result."""
    return str(statement.compile(dialect=_PSYCOPG))


_PSYCOPG = postgres_psycopg.dialect()
