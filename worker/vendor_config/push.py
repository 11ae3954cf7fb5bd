"""Sending the configurations that changed since their last success, and recording the answers.

Change detection: a digest of what would be sent (brand, id, and the body as canonical JSON with
sorted keys) is compared with ``VendorConfigState.content_sha256``, which is written only on a
5016. The digest covers ``apiHeaders`` too, so rotating a vendor credential is a change; the values
themselves are never stored. It is an HMAC-SHA256 keyed by ``RECON_VENDOR_DIGEST_KEY``: a plain
hash of a body whose every other byte is under version control would let anyone who reads the
table test guesses of the credential offline. Without the key, a body holding header values is not
pushed at all (``MissingDigestKey``); one without them needs no secret, and gets the empty key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from models.base import utcnow
from models.redemptions import FAILED, GAVE_UP, SUCCEEDED
from models.upsert import insert
from models.vendor import VendorConfigState
from worker.budget.limiter import Throttled
from worker.loyalty import Exchange, LoyaltyError, Transient, Unauthorized, VendorClient
from worker.observe.masking import MASK
from worker.reconcile.outcomes import Verdict, add_outcome, outcome_values
from worker.vendor_config.files import VendorConfig

KIND = "vendor"
MIN_SECRET_LENGTH = 6
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Planned:
    config: VendorConfig
    sha256: str
    changed: bool


@dataclass(frozen=True)
class PushResult:
    config: VendorConfig
    status: str  # succeeded | failed | gave_up (the outcome's status)
    code: int | None
    message: str
    request_id: str | None
    #: the credentials were refused: every other push would be refused too.
    unauthorized: bool = False


class MissingDigestKey(ValueError):
    """Configurations hold header values, and there is no key to digest them with."""


def content_digest(config: VendorConfig, *, key: bytes) -> str:
    """HMAC-SHA256 (hex) of what would be sent: brand, id and the body as canonical JSON."""
    canonical = json.dumps(config.body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    text = f"{config.brand_id}\n{config.config_id}\n{canonical}"
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()


def require_digest_key(configs: Sequence[VendorConfig], *, key: bytes) -> None:
    """Raise ``MissingDigestKey`` when a configuration holds header values and ``key`` is empty."""
    with_secrets = [config.source.name for config in configs if header_values(config.body)]
    if with_secrets and not key:
        raise MissingDigestKey(
            f"RECON_VENDOR_DIGEST_KEY is not set, and {len(with_secrets)} configuration(s) hold "
            f"apiHeaders values ({', '.join(with_secrets[:3])}): set it to a long random value "
            "(openssl rand -hex 32) that stays the same between pushes"
        )


def plan_push(
    *, session: Session, configs: Sequence[VendorConfig], digest_key: bytes
) -> list[Planned]:
    """Each configuration, with whether it changed since its last success (one query)."""
    if not configs:
        return []
    require_digest_key(configs, key=digest_key)
    keys = [(config.brand_id, config.config_id) for config in configs]
    stored = {
        (state.brand_id, state.config_id): state.content_sha256
        for state in session.scalars(
            select(VendorConfigState).where(
                tuple_(VendorConfigState.brand_id, VendorConfigState.config_id).in_(keys)
            )
        )
    }
    planned = []
    for config, key in zip(configs, keys, strict=True):
        digest = content_digest(config, key=digest_key)
        planned.append(Planned(config, digest, changed=stored.get(key) != digest))
    return planned


def push_config(*, session: Session, client: VendorClient, planned: Planned) -> PushResult:
    """Send one configuration; record its outcome, and its hash on 5016; commit."""
    config = planned.config
    secrets = header_values(config.body)
    exchange: Exchange | None
    unauthorized = False
    try:
        answer = client.update_vendor_redemption(
            redemption_id=config.config_id, brand_id=config.brand_id, config=config.body
        )
    except Throttled as error:
        # Our shared budget, not the platform, said no: nothing was sent.
        verdict = Verdict(GAVE_UP, None, str(error))
        exchange = None
    except LoyaltyError as error:
        # A CLI push does not retry: a transient failure is gave_up, and the next push (its
        # hash was not stored) sends it again.
        status = GAVE_UP if isinstance(error, Transient) else FAILED
        verdict = Verdict(status, error.code, scrub(error.message, secrets))
        exchange = error.exchange
        unauthorized = isinstance(error, Unauthorized)
    else:
        verdict = Verdict(SUCCEEDED, answer.code, scrub(answer.message, secrets))
        exchange = answer.exchange
        _remember(session, planned)
    if exchange is not None:
        exchange = dataclasses.replace(
            exchange,
            request_excerpt=scrub(exchange.request_excerpt, secrets),
            response_excerpt=scrub(exchange.response_excerpt, secrets),
        )
    add_outcome(
        session,
        outcome_values(
            kind=KIND,
            verdict=dataclasses.replace(
                verdict, message=f"{verdict.message} ({config.source.name})"
            ),
            attempt=1,
            exchange=exchange,
            redemption_id=str(config.config_id),
            order_ref=None,
            customer=None,
            event_id=None,
        ),
    )
    session.commit()
    request_id = exchange.request_id if exchange else None
    log.info(
        "vendor.outcome",
        config_id=config.config_id,
        brand_id=config.brand_id,
        source=config.source.name,
        status=verdict.status,
        code=verdict.code,
        request_id=request_id,
    )
    return PushResult(
        config=config,
        status=verdict.status,
        code=verdict.code,
        message=verdict.message,
        request_id=request_id,
        unauthorized=unauthorized,
    )


def header_values(body: dict[str, Any]) -> set[str]:
    """The values of every action's apiHeaders: the vendor's credentials."""
    values: set[str] = set()
    for action in body.get("actions", ()):
        for value in (action.get("apiHeaders") or {}).values():
            # Too short to be a credential, and masking it would garble unrelated text.
            if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH:
                values.add(value)
    return values


def scrub(text: str, secrets: set[str]) -> str:
    """``text`` with every secret (plain or JSON-escaped) replaced by the mask.

    The client already masks apiHeaders in its excerpts by key; this catches what it cannot
    know about: a platform that echoes a header value in an error message, for one.
    """
    for secret in secrets:
        for form in (secret, json.dumps(secret)[1:-1]):
            text = text.replace(form, MASK)
    return text


def _remember(session: Session, planned: Planned) -> None:
    config = planned.config
    statement = insert(session, VendorConfigState).values(
        brand_id=config.brand_id,
        config_id=config.config_id,
        content_sha256=planned.sha256,
        source=config.source.name[:255],
        pushed_at=utcnow(),
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["brand_id", "config_id"],
            set_={
                "content_sha256": statement.excluded.content_sha256,
                "source": statement.excluded.source,
                "pushed_at": statement.excluded.pushed_at,
            },
        )
    )
