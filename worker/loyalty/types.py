"""Typed values going to and coming from the loyalty platform.

Answers are parsed at the edge (``from_api``) so nothing past the client handles raw JSON.
Every result carries the ``Exchange`` that produced it, for the audit trail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from worker.loyalty.envelopes import as_int, expect_dict
from worker.loyalty.errors import ProtocolError
from worker.loyalty.exchange import Exchange

IdentifierType = Literal["mobile", "email", "externalId", "cardnumber"]
IDENTIFIER_TYPES: tuple[IdentifierType, ...] = ("mobile", "email", "externalId", "cardnumber")

COUPON_UPDATED = 761
COUPON_PARTIAL = 762
COUPON_INVALID_ID = 510
POINTS_REDEEMED = 800
VENDOR_UPDATED = 5016


@dataclass(frozen=True, slots=True)
class Customer:
    identifier_type: IdentifierType
    identifier_value: str


@dataclass(frozen=True, slots=True)
class CouponUpdate:
    """One coupon redemption to attach to a bill (seed 003)."""

    redemption_id: int
    bill_amount: Decimal
    transaction_number: str
    bill_id: int | None = None
    custom_fields: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CouponItemResult:
    redemption_id: int
    succeeded: bool
    code: int | None
    message: str


@dataclass(frozen=True, slots=True)
class CouponUpdateResult:
    """The answer to one ``PUT /v2/coupon/redeem``: one result per item, decided per item."""

    exchange: Exchange
    entity_code: int | None
    entity_message: str
    items: tuple[CouponItemResult, ...]

    @property
    def code(self) -> int | None:
        return self.entity_code

    @property
    def partial(self) -> bool:
        """Only some items were updated (entity code 762)."""
        return self.entity_code == COUPON_PARTIAL

    @property
    def all_succeeded(self) -> bool:
        return bool(self.items) and all(item.succeeded for item in self.items)

    @property
    def succeeded_items(self) -> tuple[CouponItemResult, ...]:
        return tuple(item for item in self.items if item.succeeded)

    @property
    def failed_items(self) -> tuple[CouponItemResult, ...]:
        return tuple(item for item in self.items if not item.succeeded)

    @property
    def outcome(self) -> str:
        if self.all_succeeded:
            return "succeeded"
        return "partial" if self.succeeded_items else "failed"

    def item(self, redemption_id: int) -> CouponItemResult | None:
        return next((item for item in self.items if item.redemption_id == redemption_id), None)

    @classmethod
    def from_api(cls, body: Any, exchange: Exchange) -> CouponUpdateResult:
        """Parse seed 003's answer: ``{"entity": {"redemptions": [...], "status": {...}}}``."""
        envelope = expect_dict(body, exchange, "the coupon answer")
        entity = expect_dict(envelope.get("entity"), exchange, "the coupon answer's entity")
        redemptions = entity.get("redemptions")
        if not isinstance(redemptions, list):
            raise ProtocolError("the coupon answer has no redemptions list", exchange=exchange)
        items = []
        for raw in redemptions:
            row = expect_dict(raw, exchange, "a coupon redemption")
            redemption_id = as_int(row.get("redemptionId"))
            if redemption_id is None:
                raise ProtocolError("a coupon result has no redemptionId", exchange=exchange)
            status = row.get("redemptionStatus")
            status = status if isinstance(status, dict) else {}
            code = as_int(status.get("code"))
            items.append(
                CouponItemResult(
                    redemption_id=redemption_id,
                    # The code decides: "status" is only a summary of it on the page.
                    succeeded=code == COUPON_UPDATED,
                    code=code,
                    message=str(status.get("message") or ""),
                )
            )
        status = entity.get("status")
        status = status if isinstance(status, dict) else {}
        return cls(
            exchange=exchange,
            entity_code=as_int(status.get("code")),
            entity_message=str(status.get("message") or ""),
            items=tuple(items),
        )


@dataclass(frozen=True, slots=True)
class PointsUpdateResult:
    """The answer to one ``PUT /v2/points/updateRedemption`` without errors (seeds 000/001)."""

    exchange: Exchange
    redemption_id: str | None
    bill_id: int | None
    bill_number: str | None
    raw_warnings: tuple[Any, ...]

    @property
    def code(self) -> int | None:
        return None

    @property
    def outcome(self) -> str:
        return "succeeded"

    @classmethod
    def from_api(cls, body: Any, exchange: Exchange) -> PointsUpdateResult:
        data = expect_dict(body, exchange, "the points update answer")
        # Some v2 answers wrap the object in "entity"; the seeds show it bare. Accept both.
        wrapped = data.get("entity")
        record: dict[str, Any] = wrapped if isinstance(wrapped, dict) else data
        warnings = data.get("warnings") or record.get("warnings") or []
        redemption_id = record.get("redemptionId")
        bill_number = record.get("billNumber")
        return cls(
            exchange=exchange,
            redemption_id=str(redemption_id) if redemption_id is not None else None,
            bill_id=as_int(record.get("billId")),
            bill_number=str(bill_number) if bill_number is not None else None,
            raw_warnings=tuple(warnings) if isinstance(warnings, list) else (warnings,),
        )


@dataclass(frozen=True, slots=True)
class PointsRedeemResult:
    """A successful ``POST /v1.1/points/redeem`` item (code 800), seed 002."""

    exchange: Exchange
    code: int
    redemption_id: str
    points_redeemed: Decimal
    balance: Decimal | None
    external_reference_number: str

    @property
    def outcome(self) -> str:
        return "succeeded"


@dataclass(frozen=True, slots=True)
class VendorUpdateResult:
    """A successful vendor redemption update (code 5016), seed 004."""

    exchange: Exchange
    code: int
    message: str
    redemption_id: int

    @property
    def outcome(self) -> str:
        return "succeeded"
