"""One HTTP call to the loyalty platform: throttle, send, time, classify, log once.

Transport failures and the status lines that carry no platform envelope are mapped here onto the
error tree; what a platform envelope means is decided by each API area's ``decide`` function.
There are no hidden retries (``max_retries=0``): Celery retries at the task level, so that every
attempt becomes an audit row.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlencode

import requests
import structlog

from worker.loyalty import jsoncodec
from worker.loyalty.auth import Auth
from worker.loyalty.envelopes import is_envelope
from worker.loyalty.errors import (
    LoyaltyError,
    ProtocolError,
    RateLimited,
    Rejected,
    Transient,
    Unauthorized,
    outcome_of,
)
from worker.loyalty.exchange import Exchange
from worker.loyalty.transport import parse_retry_after, session_factory, transport_error
from worker.observe import metrics
from worker.observe.masking import excerpt

T = TypeVar("T")
LOGGER_NAME = "worker.loyalty"
DEFAULT_TIMEOUT = (3.05, 10.0)

_BASE_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
_REQUEST_ID_HEADER = "X-Cap-Requestid"


def _raw(exchange: Exchange, body: Any) -> tuple[Exchange, Any]:
    return exchange, body


class LoyaltyHttp:
    """Sends calls to the platform for the API-area clients; owns the session it created."""

    def __init__(
        self,
        *,
        base_url: str,
        auth: Auth | None,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        throttle: Callable[[], None] | None = None,
        on_rate_limited: Callable[[float | None], object] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = auth
        self._owns_session = session is None
        self.session = session if session is not None else session_factory()
        self.timeout = timeout
        self._throttle = throttle
        self._on_rate_limited = on_rate_limited

    @property
    def auth(self) -> Auth | None:
        return self._auth

    def close(self) -> None:
        if self._owns_session:
            self.session.close()

    def __enter__(self) -> LoyaltyHttp:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[Exchange, Any]:
        """Send one call; return its exchange and parsed body (text when not JSON).

        Transport failures, 401, 429 and 5xx without an envelope raise; envelopes are returned
        as they are, for the caller to judge.
        """
        return self.call(method, path, json=json, params=params, decide=_raw)

    def call(
        self,
        method: str,
        path: str,
        *,
        decide: Callable[[Exchange, Any], T],
        json: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> T:
        """Send one call and let ``decide(exchange, body)`` turn the answer into a result or an
        error; log exactly one line for it either way."""
        if self._throttle is not None:
            self._throttle()
        headers = dict(_BASE_HEADERS)
        if self._auth is not None:
            self._auth.apply(headers)
        shown_path = f"{path}?{urlencode(params)}" if params else path
        request_excerpt = excerpt(json) if json is not None else ""
        data = jsoncodec.dumps(json).encode("utf-8") if json is not None else None
        started = time.perf_counter()
        try:
            response = self.session.request(
                method,
                self.base_url + path,
                params=params,
                data=data,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            exchange = Exchange(
                method=method,
                path=shown_path,
                http_status=None,
                request_id=None,
                elapsed_ms=_elapsed_ms(started),
                request_excerpt=request_excerpt,
                response_excerpt="",
            )
            error = transport_error(exc, exchange)
            _log(exchange, error=error)
            raise error from exc

        body = _parse_body(response.content)
        exchange = Exchange(
            method=method,
            path=shown_path,
            http_status=response.status_code,
            request_id=response.headers.get(_REQUEST_ID_HEADER),
            elapsed_ms=_elapsed_ms(started),
            request_excerpt=request_excerpt,
            response_excerpt=excerpt(body),
        )
        try:
            self._check_status(response, body, exchange)
            try:
                result = decide(exchange, body)
            except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
                # A decider that trips over an odd shape has met an answer we cannot read.
                message = f"unreadable answer ({type(exc).__name__})"
                raise ProtocolError(message, exchange=exchange) from exc
        except LoyaltyError as error:
            _log(exchange, error=error)
            raise
        _log(exchange, result=result)
        return result

    def _check_status(self, response: requests.Response, body: Any, exchange: Exchange) -> None:
        status = response.status_code
        if status == 401:
            # An OAuth token may have been revoked early: the next attempt fetches a new one.
            if self._auth is not None:
                self._auth.invalidate()
            raise Unauthorized("the platform refused our credentials (HTTP 401)", exchange=exchange)
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if self._on_rate_limited is not None:
                # Before anything else: every other process must stop sending on this key now.
                self._on_rate_limited(retry_after)
            raise RateLimited(
                "the platform throttled the call (HTTP 429)",
                retry_after=retry_after,
                exchange=exchange,
            )
        if 200 <= status < 300 or is_envelope(body):
            return
        if status >= 500 or status == 408:
            raise Transient(
                f"HTTP {status} without a platform answer", ambiguous=True, exchange=exchange
            )
        if 300 <= status < 400:
            where = response.headers.get("Location", "?")
            message = f"HTTP {status} redirect to {where}: check LOYALTY_API_URL"
            raise Rejected(None, message, exchange=exchange)
        raise Rejected(None, f"HTTP {status} without a platform answer", exchange=exchange)


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _parse_body(content: bytes) -> Any:
    if not content:
        return None
    try:
        return jsoncodec.loads(content)
    except ValueError:
        return content.decode("utf-8", errors="replace")


def _log(exchange: Exchange, *, result: object = None, error: LoyaltyError | None = None) -> None:
    """The one line per call: never headers, never bodies, never credentials."""
    if error is not None:
        code, outcome = error.code, outcome_of(error)
        level = "error" if outcome in ("unauthorized", "protocol_error", "error") else "warning"
        if outcome == "rejected":
            level = "info"
    else:
        code = getattr(result, "code", None)
        outcome = getattr(result, "outcome", "answered")
        level = "info"
    metrics.platform_call(exchange, code=code, result=outcome)
    logger = structlog.get_logger(LOGGER_NAME)
    getattr(logger, level)(
        "loyalty.call",
        method=exchange.method,
        path=exchange.path,
        http_status=exchange.http_status,
        request_id=exchange.request_id,
        code=code,
        elapsed_ms=exchange.elapsed_ms,
        outcome=outcome,
    )
