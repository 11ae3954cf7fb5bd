"""The audit web page: a read-only Flask app over the audit queries, rendered on the server.

``create_app(settings)`` builds it; ``recon web`` serves it. Every request runs in one read-only
transaction with a statement time-out on PostgreSQL, so a page can neither change nor stall the
database, whatever its parameters.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, Response, g, redirect, request, url_for
from sqlalchemy import text
from sqlalchemy.orm import Session

from models.session import engine_for, is_postgres, unit_of_work
from worker.audit.output import utc_text
from worker.settings import Settings
from worker.web import auth

#: No single query of a page may run longer than this on PostgreSQL.
STATEMENT_TIMEOUT_MS = 5000
#: Nothing but our own stylesheet: no script, no frames, nothing from elsewhere.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


def create_app(settings: Settings, *, token: str | None = None) -> Flask:
    app = Flask(__name__)
    app.config["RECON_SETTINGS"] = settings
    app.config["RECON_TOKEN"] = token or None
    app.jinja_env.filters["utc"] = lambda when: utc_text(when) if when else ""
    app.jinja_env.filters["blank"] = lambda value: "" if value is None else value
    app.jinja_env.globals["now"] = lambda: dt.datetime.now(dt.UTC)

    @app.before_request
    def _require_token() -> Any:
        secret = app.config["RECON_TOKEN"]
        if not secret or auth.is_open(request.path) or auth.is_authorised(request, secret):
            return None
        if request.method == "GET" and "text/html" in request.headers.get("Accept", ""):
            return redirect(url_for("login", next=request.full_path))
        return Response("a token is needed: Authorization: Bearer <RECON_WEB_TOKEN>\n", 401)

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    from worker.web import views

    views.register(app)
    return app


@contextmanager
def read_only_session(settings: Settings) -> Iterator[Session]:
    """One read-only transaction for the request; PostgreSQL enforces both promises."""
    engine = engine_for(settings.database_url)
    with unit_of_work(engine) as session:
        if is_postgres(engine):
            session.execute(text("SET TRANSACTION READ ONLY"))
            session.execute(text(f"SET LOCAL statement_timeout = {int(STATEMENT_TIMEOUT_MS)}"))
        yield session
        session.rollback()


def db() -> Session:
    """The request's session (opened on first use, closed when the request ends)."""
    if "recon_session" not in g:
        from flask import current_app

        manager = read_only_session(current_app.config["RECON_SETTINGS"])
        g.recon_session_manager = manager
        g.recon_session = manager.__enter__()
    return g.recon_session


def close_session(_: BaseException | None = None) -> None:
    manager = g.pop("recon_session_manager", None)
    g.pop("recon_session", None)
    if manager is not None:
        manager.__exit__(None, None, None)
