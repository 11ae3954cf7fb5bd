"""The loyalty platform's API client: one client per API area over one shared HTTP layer.

``LoyaltyClient.from_settings(settings)`` is the way in. Errors say whether to retry
(``Transient``, with ``ambiguous`` when the call may have taken effect), not to
(``Rejected``, ``LocalRejection``), or to fix the configuration (``Unauthorized``).
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

import requests

from worker.loyalty.auth import Auth, BasicAuth, OAuthTokens, basic_auth_header
from worker.loyalty.coupons import CouponClient
from worker.loyalty.errors import (
    TRANSIENT_CODES,
    LocalRejection,
    LoyaltyError,
    ProtocolError,
    RateLimited,
    Rejected,
    Transient,
    Unauthorized,
    is_transient_code,
)
from worker.loyalty.http import LoyaltyHttp
from worker.loyalty.points import PointsClient
from worker.loyalty.transport import session_factory
from worker.loyalty.types import (
    CouponItemResult,
    CouponUpdate,
    CouponUpdateResult,
    Customer,
    Exchange,
    PointsRedeemResult,
    PointsUpdateResult,
    VendorUpdateResult,
)
from worker.loyalty.vendor import VendorClient

if TYPE_CHECKING:
    from worker.settings import Settings

CONNECT_TIMEOUT_SECONDS = 3.05

__all__ = [
    "TRANSIENT_CODES",
    "Auth",
    "BasicAuth",
    "CouponClient",
    "CouponItemResult",
    "CouponUpdate",
    "CouponUpdateResult",
    "Customer",
    "Exchange",
    "LocalRejection",
    "LoyaltyClient",
    "LoyaltyError",
    "LoyaltyHttp",
    "OAuthTokens",
    "PointsClient",
    "PointsRedeemResult",
    "PointsUpdateResult",
    "ProtocolError",
    "RateLimited",
    "Rejected",
    "Transient",
    "Unauthorized",
    "VendorClient",
    "VendorUpdateResult",
    "basic_auth_header",
    "is_transient_code",
    "session_factory",
]


class LoyaltyClient:
    """``.coupons``, ``.points`` and ``.vendor`` over one ``LoyaltyHttp`` (one session, one
    throttle, one set of credentials). Close it, or use it as a context manager."""

    def __init__(self, http: LoyaltyHttp, *, owns_session: bool = False) -> None:
        self.http = http
        self.coupons = CouponClient(http)
        self.points = PointsClient(http)
        self.vendor = VendorClient(http)
        self._owns_session = owns_session

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        throttle: Callable[[], None] | None = None,
        on_rate_limited: Callable[[float | None], object] | None = None,
        session: requests.Session | None = None,
    ) -> LoyaltyClient:
        """Build the client the settings describe: OAuth when a client key is set, else Basic.

        ``throttle`` is called before every request (the token request included): the worker's
        global rate limiter plugs in here; ``on_rate_limited(retry_after)`` is told of every 429
        (the limiter pauses the key for every process). A session passed in stays the caller's
        to close.
        """
        settings.require_credentials()
        owns_session = session is None
        shared = session if session is not None else session_factory()
        timeout = (CONNECT_TIMEOUT_SECONDS, settings.http_timeout_seconds)

        def http_with(auth: Auth | None) -> LoyaltyHttp:
            return LoyaltyHttp(
                base_url=settings.loyalty_api_url,
                auth=auth,
                session=shared,
                timeout=timeout,
                throttle=throttle,
                on_rate_limited=on_rate_limited,
            )

        auth: Auth
        if settings.uses_oauth:
            # The token call goes through the same session, throttle and call log, unauthenticated.
            auth = OAuthTokens(
                http_with(None),
                key=settings.loyalty_client_key,
                secret=settings.loyalty_client_secret.get_secret_value(),
            )
        else:
            auth = BasicAuth(
                settings.loyalty_api_username, settings.loyalty_api_password.get_secret_value()
            )
        http = http_with(auth)
        return cls(http, owns_session=owns_session)

    def close(self) -> None:
        if self._owns_session:
            self.http.session.close()

    def __enter__(self) -> LoyaltyClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
