"""The path every platform request takes, in the platform's order:

route -> authenticate (401) -> rate limit (429) -> fault (scripted, else random) -> body is a
JSON object (400) -> customer lock (521) -> [slow sleep] -> handler -> [lost: hang up].

Everything refused before the handler has no effect, which is what lets a client retry it
safely; only a "lost" fault applies the effect and then hides the answer.
"""

from __future__ import annotations

import time
from dataclasses import replace

from sandbox.app import SandboxApp
from sandbox.auth import caller
from sandbox.endpoint import NOT_JSON, Endpoint, Request
from sandbox.faults import Fault
from sandbox.replies import DROPPED, LOST, UNAUTHORIZED, Reply, gateway_error, throttled, v2_errors
from sandbox.routes import find
from sandbox.stats import new_entry

NOT_A_JSON_OBJECT = (9001, "Request body must be a JSON object")
NO_SUCH_ENDPOINT = (9002, "No such endpoint")
METHOD_NOT_ALLOWED = (9003, "Method not allowed on this endpoint")
OVERLAP = (521, "Another request for the same customer is in progress")


def _status_fault(fault: Fault) -> Reply:
    if fault.status == 429:
        if fault.retry_after is not None:
            return throttled(fault.retry_after)
        return replace(throttled(1), headers=())  # a 429 without Retry-After, on request
    reply = gateway_error(fault.status)
    if fault.retry_after is not None:
        reply = replace(reply, headers=(("Retry-After", str(fault.retry_after)),))
    return reply


def _through(app: SandboxApp, endpoint: Endpoint, request: Request) -> Reply:
    if endpoint.authenticated:
        key = caller(request.headers, app.config, app.tokens)
        if key is None:
            return UNAUTHORIZED
        request.api_key = key
        wait = app.limiter.take(key)
        if wait:
            app.stats.bump("throttled")
            return throttled(wait)

    fault = app.faults.next_scripted(request.path)
    delay = 0.0
    if fault is None and endpoint.random_faults:
        fault, delay = app.faults.draw(app.config)
    if fault is not None:
        if fault.kind == "status":
            return _status_fault(fault)
        if fault.kind == "drop":
            return DROPPED
        if fault.kind == "code":
            return endpoint.refuse(request.body, fault.code, f"Scripted failure {fault.code}")
        if fault.kind == "slow":
            delay = fault.seconds

    if not isinstance(request.body, dict):
        return v2_errors(*NOT_A_JSON_OBJECT, status=400)

    keys = endpoint.customers(request.body)
    if keys and not app.locks.try_acquire(keys):
        app.stats.bump("overlaps_521")
        return endpoint.refuse(request.body, *OVERLAP)
    try:
        # The sleep happens while the customer is locked, so a slow request reliably
        # overlaps the next one for the same customer (that is how tests provoke 521).
        if delay:
            time.sleep(delay)
        reply = endpoint.handle(app, request)
    finally:
        if keys:
            app.locks.release(keys)
    return LOST if fault is not None and fault.kind == "lost" else reply


def answer(app: SandboxApp, request: Request, request_id: str, raw_body: bytes) -> Reply:
    """Answer one platform request and record it in the stats and the request ring."""
    generation = app.stats.generation
    # A body that is not JSON is kept as (the start of) its text, so a test can see what came.
    logged_body = request.body
    if logged_body is NOT_JSON:
        logged_body = raw_body[:4096].decode(errors="replace") if raw_body else None
    entry = new_entry(
        request.method, request.path, request.query, dict(request.headers.items()), logged_body
    )
    endpoint, params, allowed = find(request.method, request.path)
    if endpoint is not None:
        request.params = params
        reply = _through(app, endpoint, request)
        name = endpoint.name
    elif allowed:
        reply = replace(
            v2_errors(*METHOD_NOT_ALLOWED, status=405), headers=(("Allow", ", ".join(allowed)),)
        )
        name = f"{request.method} (not allowed)"
    else:
        reply = v2_errors(*NO_SUCH_ENDPOINT, status=404)
        name = "(unknown endpoint)"
    entry["api_key"] = request.api_key
    entry["status"] = reply.hang_up or reply.status
    entry["request_id"] = request_id
    app.stats.record(entry, name, generation)
    return reply
