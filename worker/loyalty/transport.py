"""The transport under the client: a pooled session without hidden retries, ``Retry-After``, and
what a call that got no answer means (could it have taken effect?)."""

from __future__ import annotations

import email.utils
import math
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError

from worker.loyalty.errors import LoyaltyError, Transient
from worker.loyalty.exchange import Exchange

# Requests that cannot be built are our configuration's fault, not the network's.
_CONFIG_ERRORS = (
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.URLRequired,
    requests.exceptions.InvalidHeader,
)


class _Session(requests.Session):
    """requests reads the proxy variables and the CA bundle from the environment again for every
    request (a walk of ``os.environ``: a tenth of a reconcile task's CPU in a profile). A worker's
    environment does not change while it runs, so what it says for an address is kept."""

    def __init__(self) -> None:
        super().__init__()
        self._environment: dict[tuple[Any, ...], Any] = {}

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        if proxies or not self.trust_env:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(str(url))
        key = (parts.scheme, parts.netloc, stream, verify, cert)
        settings: Any = self._environment.get(key)
        if settings is None:
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            self._environment[key] = settings
        return {**settings, "proxies": dict(settings["proxies"])}


def session_factory(*, pool_connections: int = 4, pool_maxsize: int = 16) -> requests.Session:
    """A pooled session without urllib3 retries: every attempt must be visible to the caller."""
    session = _Session()
    adapter = HTTPAdapter(
        pool_connections=pool_connections, pool_maxsize=pool_maxsize, max_retries=0
    )
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP-date; None if unreadable."""
    if not value or not value.strip():
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _caused_by(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> bool:
    """Search the exception's chain, including urllib3's ``MaxRetryError.reason`` and the
    exceptions requests wraps in ``args``."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kinds):
            return True
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked.extend(current.args)
        pending.extend(item for item in linked if isinstance(item, BaseException))
    return False


def transport_error(exc: requests.RequestException, exchange: Exchange) -> LoyaltyError:
    """What a failure without an HTTP answer means, above all: could the request have taken
    effect? Only a failure to connect proves that it did not."""
    kind = type(exc).__name__
    if isinstance(exc, _CONFIG_ERRORS):
        return LoyaltyError(f"the request could not be built ({kind})", exchange=exchange)
    if isinstance(exc, requests.ConnectTimeout):
        return Transient("connect time-out", ambiguous=False, exchange=exchange)
    if isinstance(exc, requests.ReadTimeout):
        message = "read time-out: the call may have taken effect"
        return Transient(message, ambiguous=True, exchange=exchange)
    if isinstance(exc, requests.exceptions.SSLError):
        # TLS fails during the handshake, before any byte of the request is sent.
        return Transient(f"TLS failure ({kind})", ambiguous=False, exchange=exchange)
    if isinstance(exc, requests.ConnectionError) and _caused_by(exc, (NewConnectionError,)):
        return Transient("could not connect", ambiguous=False, exchange=exchange)
    message = f"connection lost after sending ({kind}): the call may have taken effect"
    return Transient(message, ambiguous=True, exchange=exchange)
