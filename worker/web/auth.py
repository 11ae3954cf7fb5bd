"""The page's one secret: ``RECON_WEB_TOKEN``, as a bearer header or a cookie set by a login form.

The cookie never holds the token itself but an HMAC of it, so a copied cookie does not reveal the
token, and changing the token logs everyone out.
"""

from __future__ import annotations

import hashlib
import hmac

from flask import Request

COOKIE = "recon_web"
#: Paths reachable without the token: the login form and the stylesheet it uses.
OPEN_PATHS = ("/login", "/static/")


def cookie_value(token: str) -> str:
    return hmac.new(token.encode(), b"recon-web-session", hashlib.sha256).hexdigest()


def is_open(path: str) -> bool:
    return path == OPEN_PATHS[0] or path.startswith(OPEN_PATHS[1])


def is_authorised(request: Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "bearer" and given and hmac.compare_digest(given.strip(), token):
        return True
    cookie = request.cookies.get(COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie, cookie_value(token))


def token_matches(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())
