"""Who is calling: Basic with an MD5-hashed password, or an OAuth token (/v3/oauth/token/generate).

The name returned is the "API key" the rate limit and the stats are kept per: the till username
for Basic, the client key for OAuth.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Mapping

from sandbox.config import SandboxConfig

OAUTH_HEADER = "X-CAP-API-OAUTH-TOKEN"


class TokenStore:
    """Issued OAuth tokens and when they stop working."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}

    def issue(self, client_key: str, ttl_seconds: int) -> str:
        token = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            # Forget expired tokens now and then, so a long benchmark does not grow the dict.
            if len(self._tokens) > 10_000:
                self._tokens = {t: v for t, v in self._tokens.items() if v[1] > now}
            self._tokens[token] = (client_key, now + ttl_seconds)
        return token

    def owner(self, token: str) -> str | None:
        with self._lock:
            entry = self._tokens.get(token)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()


def md5_hex(password: str) -> str:
    return hashlib.md5(password.encode()).hexdigest()


def basic_user(header: str, users: Mapping[str, str]) -> str | None:
    """The username if the header is Basic base64("user:" + md5_hex(password)), else None.

    The plain password is refused on purpose: the platform only accepts the hash, and a client
    that forgets to hash must find out here, not in production.
    """
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, digest = decoded.partition(":")
    password = users.get(username)
    if not sep or password is None:
        return None
    return username if hmac.compare_digest(digest.encode(), md5_hex(password).encode()) else None


def caller(headers: Mapping[str, str], config: SandboxConfig, tokens: TokenStore) -> str | None:
    """The API key of an authenticated caller, or None (answer 401)."""
    token = headers.get(OAUTH_HEADER)
    if token:
        return tokens.owner(token.strip())
    authorization = headers.get("Authorization")
    if authorization:
        return basic_user(authorization, config.users)
    return None


def client_key(key: object, secret: object, config: SandboxConfig) -> str | None:
    """The OAuth client key if key and secret match a configured client."""
    if not isinstance(key, str) or not isinstance(secret, str):
        return None
    expected = config.oauth_clients.get(key)
    if expected is None or not hmac.compare_digest(secret.encode(), expected.encode()):
        return None
    return key
