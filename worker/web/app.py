"""The audit web page: a read-only Flask app over the audit queries, rendered on the server.

``create_app(settings)`` builds it from two Blueprints, ``audit`` (the pages, worker/web/views.py)
and ``signin`` (the token, worker/web/auth.py); ``recon web`` serves it with waitress. Every
request reads in one read-only session (worker/web/queries.py), so a page can neither change nor
stall the database, whatever its parameters.
"""

from __future__ import annotations

import datetime as dt

from flask import Flask, Response, current_app, render_template
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from worker.cli.output import utc_text
from worker.settings import Settings
from worker.web import auth, queries, views
from worker.web.params import BadParameter

#: Nothing but our own stylesheet: no script, no frames, nothing from elsewhere.
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
#: The only bodies the page takes are the sign-in and sign-out forms.
MAX_BODY_BYTES = 16 * 1024


def create_app(settings: Settings, *, token: str | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        RECON_SETTINGS=settings,
        RECON_TOKEN=token or None,
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        MAX_FORM_MEMORY_SIZE=MAX_BODY_BYTES,
        MAX_FORM_PARTS=16,
    )
    auth.init_app(app, secure_cookies=settings.web_secure_cookies)
    if settings.web_trusted_proxies:
        # Only then is X-Forwarded-For the client (the sign-in limit's key) and
        # X-Forwarded-Proto the scheme (the cookie's Secure flag): otherwise anyone may send them.
        hops = settings.web_trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    app.jinja_env.filters["utc"] = lambda when: utc_text(when) if when else ""
    app.jinja_env.filters["blank"] = lambda value: "" if value is None else value
    app.jinja_env.globals["now"] = lambda: dt.datetime.now(dt.UTC)

    app.register_blueprint(auth.bp)
    app.register_blueprint(views.bp)
    app.teardown_request(queries.close_session)
    app.register_error_handler(BadParameter, _bad_parameter)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(SQLAlchemyError, _database_error)
    app.after_request(_headers)
    return app


def _headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def _bad_parameter(exc: BadParameter) -> tuple[str, int]:
    return render_template("error.html", status=400, message=str(exc)), 400


def _database_error(exc: SQLAlchemyError) -> tuple[str, int]:
    # One line for the reader, the details in the log; never the URL (it may hold a password).
    current_app.logger.error("web.database_error: %s", type(exc).__name__)
    problem = type(getattr(exc, "orig", None) or exc).__name__
    message = f"cannot query the database ({problem}): is it up, and migrated (`recon migrate`)?"
    return render_template("error.html", status=503, message=message), 503


def _http_error(exc: HTTPException) -> tuple[str, int]:
    status = exc.code or 500
    return render_template("error.html", status=status, message=exc.description), status
