"""How requests prove who we are: Basic with an MD5-hashed password, or an OAuth token.

Neither object ever shows its secret: no ``repr`` of a credential, no token in a log line. The
token request itself is an ordinary call through ``LoyaltyHttp`` (so it is throttled, logged once
and redacted like every other call), which this module knows only as a ``Caller``.
"""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from worker.loyalty.envelopes import as_decimal, expect_dict, raise_for_v2_errors
from worker.loyalty.errors import ProtocolError, Rejected, Unauthorized
from worker.loyalty.exchange import Exchange

T = TypeVar("T")

# Names, not secrets (the linter's hard-coded-password rule matches the word "token").
TOKEN_PATH = "/v3/oauth/token/generate"  # noqa: S105
TOKEN_HEADER = "X-CAP-API-OAUTH-TOKEN"  # noqa: S105


class Caller(Protocol):
    """What the token request is sent through (``LoyaltyHttp``, without credentials)."""

    def call(
        self, method: str, path: str, *, decide: Callable[[Exchange, Any], T], json: Any = None
    ) -> T: ...


class Auth(Protocol):
    """Adds credentials to a request's headers."""

    def apply(self, headers: dict[str, str]) -> None: ...

    def invalidate(self) -> None:
        """Forget cached credentials after a 401, so the next call obtains fresh ones."""


def basic_auth_header(username: str, password: str) -> str:
    """``Basic base64(username + ":" + md5_hex(password))``: the platform wants the password
    MD5-hashed (lowercase hex) before encoding (DESIGN.md, "Auth")."""
    digest = hashlib.md5(password.encode("utf-8")).hexdigest()
    token = base64.b64encode(f"{username}:{digest}".encode()).decode("ascii")
    return f"Basic {token}"


class BasicAuth:
    """Basic auth with the till's username and password."""

    __slots__ = ("_header",)

    def __init__(self, username: str, password: str) -> None:
        self._header = basic_auth_header(username, password)

    def apply(self, headers: dict[str, str]) -> None:
        headers["Authorization"] = self._header

    def invalidate(self) -> None:
        """Nothing is cached that a new attempt could improve."""

    def __repr__(self) -> str:
        return "BasicAuth(***)"


@dataclass(frozen=True, slots=True, repr=False)
class _Token:
    value: str
    ttl_seconds: float

    @property
    def code(self) -> None:
        return None

    @property
    def outcome(self) -> str:
        return "succeeded"


def _decide_token(exchange: Exchange, body: Any) -> _Token:
    try:
        raise_for_v2_errors(body, exchange)
    except Rejected as exc:
        message = f"the platform refused the OAuth client: {exc.message}"
        raise Unauthorized(message, code=exc.code, exchange=exchange) from exc
    envelope = expect_dict(body, exchange, "the token answer")
    data = expect_dict(envelope.get("data"), exchange, "the token answer's data")
    token = data.get("accessToken")
    ttl = as_decimal(data.get("ttlSeconds"))
    if not isinstance(token, str) or not token or ttl is None or ttl <= 0:
        raise ProtocolError("the token answer lacks accessToken or ttlSeconds", exchange=exchange)
    return _Token(token, float(ttl))


class OAuthTokens:
    """``X-CAP-API-OAUTH-TOKEN`` from ``POST /v3/oauth/token/generate``, cached and renewed early.

    A token is renewed when less than ``max(5 s, 10 % of its ttl)`` remains, capped at half the
    ttl so that a short-lived token is still reused. One lock: concurrent threads fetch once.
    """

    __slots__ = (
        "_clock",
        "_expires_at",
        "_http",
        "_key",
        "_lock",
        "_renew_at",
        "_secret",
        "_token",
    )

    def __init__(
        self,
        http: Caller,
        *,
        key: str,
        secret: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = http
        self._key = key
        self._secret = secret
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0
        self._expires_at = 0.0

    def apply(self, headers: dict[str, str]) -> None:
        headers[TOKEN_HEADER] = self.token()

    def invalidate(self) -> None:
        with self._lock:
            self._token = None

    def token(self) -> str:
        """A token with time left, fetching a new one when needed."""
        with self._lock:
            if self._token is None or self._clock() >= self._renew_at:
                self._fetch()
            assert self._token is not None
            return self._token

    def _fetch(self) -> None:
        # Measured before the call: the token's life starts at the latest when it is issued.
        started = self._clock()
        credentials = {"key": self._key, "secret": self._secret}
        answer = self._http.call("POST", TOKEN_PATH, json=credentials, decide=_decide_token)
        margin = min(max(5.0, answer.ttl_seconds * 0.1), answer.ttl_seconds / 2)
        self._token = answer.value
        self._expires_at = started + answer.ttl_seconds
        self._renew_at = self._expires_at - margin

    def __repr__(self) -> str:
        return "OAuthTokens(***)"
