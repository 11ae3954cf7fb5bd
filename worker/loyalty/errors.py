"""The loyalty client's error tree: what went wrong, and whether trying again can help.

``Transient`` means "try again later"; ``Rejected`` means "the platform (or we) refused, for
good"; ``Unauthorized`` is permanent for the item but really a configuration problem.
``Transient.ambiguous`` says whether the request may have reached the platform and taken effect:
it matters for the one call that is not idempotent, the points redeem.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.loyalty.exchange import Exchange

#: DESIGN.md's transient platform codes, in one place: 461 busy, 521 another request for the same
#: customer is running, and the v1.1 "try again later" item codes.
TRANSIENT_CODES: frozenset[int] = frozenset({461, 521, 815, 886, 887, 889, 894, 898})


def is_transient_code(code: int | None) -> bool:
    """True when the platform's code means "not done, try again later"."""
    return code in TRANSIENT_CODES


class LoyaltyError(Exception):
    """Base of every error the loyalty client raises.

    ``message`` is ours or the platform's, never a credential; ``exchange`` is the redacted record
    of the call (None when no request was sent).
    """

    def __init__(
        self, message: str, *, code: int | None = None, exchange: Exchange | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.exchange = exchange

    def __str__(self) -> str:
        text = f"[{self.code}] {self.message}" if self.code is not None else self.message
        if self.exchange is not None:
            status = self.exchange.http_status
            answered = f"HTTP {status}" if status is not None else "no answer"
            text += f" ({self.exchange.method} {self.exchange.path}: {answered}"
            if self.exchange.request_id:
                text += f", request id {self.exchange.request_id}"
            text += ")"
        return text

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only constructors defeat Exception's default pickling (it replays self.args);
        # Celery may pickle an exception to carry it across a retry or into a result.
        return (_restore, (type(self), dict(self.__dict__)))


def _restore(cls: type[LoyaltyError], state: dict[str, Any]) -> LoyaltyError:
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("message", ""))
    error.__dict__.update(state)
    return error


class Unauthorized(LoyaltyError):
    """HTTP 401, or the OAuth token request was refused: the credentials are wrong."""


class Transient(LoyaltyError):
    """Not done now; the same request may succeed later.

    ``ambiguous`` is True when the request may have reached the platform and taken effect (read
    time-out, connection dropped after sending, 5xx), False when it certainly did not (connect
    failure, 429, codes 461/521 and the v1.1 "try again later" codes).
    """

    def __init__(
        self,
        message: str,
        *,
        ambiguous: bool,
        code: int | None = None,
        exchange: Exchange | None = None,
    ) -> None:
        super().__init__(message, code=code, exchange=exchange)
        self.ambiguous = ambiguous


class RateLimited(Transient):
    """HTTP 429. ``retry_after`` is the server's ``Retry-After`` in seconds, when it sent one."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None,
        exchange: Exchange | None = None,
    ) -> None:
        super().__init__(message, ambiguous=False, exchange=exchange)
        self.retry_after = retry_after


class ProtocolError(Transient):
    """An answer we cannot interpret. Treated as transient and, by default, ambiguous: the
    platform answered, so the request reached it, and we cannot tell what it did."""

    def __init__(
        self,
        message: str,
        *,
        ambiguous: bool = True,
        code: int | None = None,
        exchange: Exchange | None = None,
    ) -> None:
        super().__init__(message, ambiguous=ambiguous, code=code, exchange=exchange)


class Rejected(LoyaltyError):
    """The platform refused the request for good; ``code`` is its code (None if it gave none)."""

    def __init__(self, code: int | None, message: str, *, exchange: Exchange | None = None) -> None:
        super().__init__(message, code=code, exchange=exchange)


class LocalRejection(Rejected):
    """Our own validation refused the request before any HTTP call; ``exchange`` is None."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message, exchange=None)


def outcome_of(error: LoyaltyError) -> str:
    """The word the call log uses for an error (one vocabulary for every call)."""
    if isinstance(error, Unauthorized):
        return "unauthorized"
    if isinstance(error, RateLimited):
        return "rate_limited"
    if isinstance(error, ProtocolError):
        return "protocol_error"
    if isinstance(error, Transient):
        return "ambiguous" if error.ambiguous else "transient"
    if isinstance(error, Rejected):
        return "rejected"
    return "error"
