"""POST /v3/oauth/token/generate: trade a client key and secret for a short-lived token.

Not authenticated and not rate limited (it is how a client gets its credentials), and spared
random faults so a benchmark's error rate measures the business calls; scripted faults do
apply, for tests of token renewal.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from sandbox.auth import client_key
from sandbox.endpoint import Endpoint, Request
from sandbox.replies import UNAUTHORIZED, Reply, json_reply, v2_errors

if TYPE_CHECKING:
    from sandbox.app import SandboxApp

PATH = "/v3/oauth/token/generate"


def handle(app: SandboxApp, request: Request) -> Reply:
    body = request.body
    key = client_key(body.get("key"), body.get("secret"), app.config)
    if key is None:
        return UNAUTHORIZED
    request.api_key = key
    ttl = app.config.token_ttl_seconds
    token = app.tokens.issue(key, ttl)
    return json_reply(200, {"data": {"accessToken": token, "ttlSeconds": ttl}})


def refuse(body: Any, code: int, message: str) -> Reply:
    return v2_errors(code, message)


ENDPOINT = Endpoint(
    method="POST",
    name=f"POST {PATH}",
    pattern=re.compile(re.escape(PATH) + "$"),
    handle=handle,
    refuse=refuse,
    authenticated=False,
    random_faults=False,
)
