"""The page's one secret, ``RECON_WEB_TOKEN``: the Blueprint ``signin`` and the guard on every page.

A script sends the token as ``Authorization: Bearer <token>``; a person signs in through a form,
which starts a session: a random id, kept by this process and carried by Flask's signed session
cookie (HttpOnly, SameSite=Strict, expiring, ``Secure`` when the page is served over HTTPS).
Signing out forgets the id here, so a copy of the cookie is worth nothing afterwards; so does a
restart (the signing key is made anew by each process). `recon web` is one process (waitress,
with threads), so the sessions and the sign-in limit are in one place.

Sign-in attempts are limited per client address (``ATTEMPTS``, a moving window); the address is
the socket's, or the one a trusted proxy forwarded (``RECON_WEB_TRUSTED_PROXIES``), never a
header a client may set itself.
"""

from __future__ import annotations

import datetime as dt
import hmac
import math
import secrets
import threading
import time
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    has_request_context,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from limits import RateLimitItem, parse, storage, strategies

bp = Blueprint("signin", __name__)

COOKIE = "recon_web"
#: A session ends this long after sign-in, whatever happens in between.
SESSION_LIFETIME = dt.timedelta(hours=8)
#: Sessions this process keeps at most; the oldest go first (only a right token makes one).
MAX_SESSIONS = 10_000
#: Sign-in attempts per client address: enough for typos, far too few to guess a token.
ATTEMPTS: RateLimitItem = parse("10 per 10 minutes")
#: Endpoints reachable without the token: the sign-in form and the stylesheet it uses.
OPEN_ENDPOINTS = ("signin.login", "static")
#: Characters kept as they are in a ``next`` path and query; the rest is percent-encoded.
SAFE_PATH = "/:@!$&'()*+,;=-._~%"
SAFE_QUERY = SAFE_PATH + "?"


class Sessions:
    """Session ids this process handed out, with when each ends; thread-safe."""

    def __init__(self) -> None:
        self._ends: dict[str, float] = {}
        self._lock = threading.Lock()

    def start(self) -> str:
        sid = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._ends = {k: end for k, end in self._ends.items() if end > now}
            while len(self._ends) >= MAX_SESSIONS:
                del self._ends[next(iter(self._ends))]  # dicts keep insertion order
            self._ends[sid] = now + SESSION_LIFETIME.total_seconds()
        return sid

    def alive(self, sid: Any) -> bool:
        if not isinstance(sid, str):
            return False
        with self._lock:
            end = self._ends.get(sid)
        return end is not None and end > time.monotonic()

    def end(self, sid: Any) -> None:
        if isinstance(sid, str):
            with self._lock:
                self._ends.pop(sid, None)


class SessionCookies(SecureCookieSessionInterface):
    """Flask's signed cookie, marked ``Secure`` also when this request came over HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        configured = super().get_cookie_secure(app)
        return configured or (has_request_context() and request.is_secure)


def init_app(app: Flask, *, secure_cookies: bool) -> None:
    app.config.update(
        # Made anew by every process: a restart signs everyone out, which the sessions kept
        # in memory would do anyway; nothing to configure, nothing to leak.
        SECRET_KEY=secrets.token_bytes(32),
        SESSION_COOKIE_NAME=COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=secure_cookies,
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        SESSION_REFRESH_EACH_REQUEST=False,
    )
    app.session_interface = SessionCookies()
    app.extensions["recon_sessions"] = Sessions()
    app.extensions["recon_attempts"] = strategies.MovingWindowRateLimiter(storage.MemoryStorage())


def _sessions() -> Sessions:
    sessions: Sessions = current_app.extensions["recon_sessions"]
    return sessions


@bp.before_app_request
def require_token() -> Any:
    token = current_app.config["RECON_TOKEN"]
    if not token or request.endpoint in OPEN_ENDPOINTS or is_authorised(token):
        return None
    if request.method == "GET" and "text/html" in request.headers.get("Accept", ""):
        return redirect(url_for("signin.login", next=request.full_path))
    return Response("a token is needed: Authorization: Bearer <RECON_WEB_TOKEN>\n", 401)


def is_authorised(token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # WSGI hands header values over as latin-1 text: encoding them back gives the bytes sent.
    if scheme.lower() == "bearer" and given.strip():
        sent = given.strip().encode("latin-1", errors="replace")
        if hmac.compare_digest(sent, token.encode("utf-8")):
            return True
    return _sessions().alive(session.get("sid"))


def token_matches(given: str, token: str) -> bool:
    """Compared as bytes, in constant time, whatever characters either holds."""
    return hmac.compare_digest(
        given.encode("utf-8", errors="surrogatepass"), token.encode("utf-8", errors="surrogatepass")
    )


def safe_target(raw: str | None) -> str:
    """Where to go after signing in: a path on this site, or the home page.

    Parsed, not pattern-matched: a browser drops tabs and newlines and reads ``\\`` as ``/``
    before it resolves a URL, so any of them, a scheme or a host means "not ours".
    """
    home = url_for("audit.home")
    if not raw or len(raw) > 2048 or "\\" in raw or not raw.isprintable() or " " in raw:
        return home
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc or not parts.path.startswith("/"):
        return home
    if parts.path.startswith("//"):
        return home
    return urlunsplit(
        ("", "", quote(parts.path, safe=SAFE_PATH), quote(parts.query, SAFE_QUERY), "")
    )


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    token = current_app.config["RECON_TOKEN"]
    target = safe_target(request.values.get("next"))
    if request.method == "GET":
        return render_template("login.html", next=target, failed=False, needed=bool(token))
    attempts: strategies.MovingWindowRateLimiter = current_app.extensions["recon_attempts"]
    address = request.remote_addr or "unknown"
    if not attempts.hit(ATTEMPTS, "signin", address):
        reset = attempts.get_window_stats(ATTEMPTS, "signin", address).reset_time
        wait = max(1, math.ceil(reset - time.time()))
        page = render_template("login.html", next=target, failed=False, needed=True, wait=wait)
        return page, 429, {"Retry-After": str(wait)}
    given = request.form.get("token", "")
    if not token or not token_matches(given, token):
        return render_template("login.html", next=target, failed=True, needed=bool(token)), 401
    session.clear()
    session.permanent = True
    session["sid"] = _sessions().start()
    return redirect(target)


@bp.post("/logout")
def logout() -> Any:
    _sessions().end(session.get("sid"))
    session.clear()
    return redirect(url_for("signin.login"))
