"""The event contract (version 1): what order systems publish, validated at the door.

Unknown fields are kept (``extra="allow"``), never rejected. A message that breaks the contract
becomes a ``ContractError`` whose text names the field, for the inbox's rejected row.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

EVENT_TYPES = (
    "coupon.redeemed",
    "points.redeemed",
    "points.redeem_requested",
    "transaction.completed",
)

Text = Annotated[StrictStr, Field(min_length=1, max_length=128)]
# Java's long: the platform stores bill ids in one.
MAX_BILL_ID = 9_223_372_036_854_775_807


class ContractError(ValueError):
    """The message is not a version-1 event; ``reason`` says which field and why."""

    def __init__(self, reason: str, *, event_id: str | None = None, type_: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id
        self.type = type_


class Customer(BaseModel):
    model_config = ConfigDict(frozen=True)

    identifier_type: Literal["mobile", "email", "externalId", "cardnumber"]
    identifier_value: Text


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    event_id: Text
    occurred_at: AwareDatetime
    order_ref: Text
    customer: Customer


def _points_with_three_places(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("must be a finite number")
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -3 and value != value.quantize(Decimal("0.001")):
        raise ValueError("must have at most 3 decimal places")
    return value


class CouponRedeemed(_Event):
    type: Literal["coupon.redeemed"]
    redemption_id: Annotated[StrictInt, Field(gt=0)]
    coupon_code: Text | None = None


class PointsRedeemed(_Event):
    type: Literal["points.redeemed"]
    redemption_id: Text | None = None
    external_reference_number: Text | None = None
    points: Decimal
    program_id: Text | None = None
    validation_code: Text | None = None

    _check_points = field_validator("points")(_points_with_three_places)

    @model_validator(mode="after")
    def _one_identifier(self) -> PointsRedeemed:
        if not self.redemption_id and not self.external_reference_number:
            raise ValueError("needs redemption_id or external_reference_number")
        return self


class PointsRedeemRequested(_Event):
    type: Literal["points.redeem_requested"]
    # Precision and sign are the platform's 878 and 801: checked when redeeming, so the refusal
    # is an audited outcome with the platform's code rather than a rejected event.
    points: Decimal
    program_id: Text | None = None
    validation_code: Text | None = None
    notes: Annotated[StrictStr, Field(max_length=1000)] | None = None
    custom_fields: dict[StrictStr, StrictStr] | None = None
    skip_validation: StrictBool = False

    @field_validator("customer")
    @classmethod
    def _mobile_only(cls, customer: Customer) -> Customer:
        if customer.identifier_type != "mobile":
            raise ValueError("points are redeemed by mobile number: identifier_type must be mobile")
        return customer

    @field_validator("points")
    @classmethod
    def _finite(cls, value: Decimal) -> Decimal:
        if not value.is_finite():
            raise ValueError("must be a finite number")
        return value


class RedemptionRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["coupon", "points"]
    redemption_id: StrictInt | Text

    @model_validator(mode="after")
    def _coupon_ids_are_integers(self) -> RedemptionRef:
        if self.kind == "coupon" and not isinstance(self.redemption_id, int):
            raise ValueError("a coupon redemption_id is an integer")
        return self

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, str(self.redemption_id)


class TransactionCompleted(_Event):
    type: Literal["transaction.completed"]
    bill_number: Text
    bill_id: Annotated[StrictInt, Field(gt=0, le=MAX_BILL_ID)] | None = None
    bill_amount: Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=4)] | None = None
    purpose: Annotated[StrictStr, Field(max_length=255)] | None = None
    custom_fields: dict[StrictStr, StrictStr] | None = None
    redemptions: list[RedemptionRef] | None = None


Event = Annotated[
    CouponRedeemed | PointsRedeemed | PointsRedeemRequested | TransactionCompleted,
    Field(discriminator="type"),
]
_EVENT = TypeAdapter(Event)


def parse_event(body: bytes | str | dict[str, Any]) -> Event:
    """Decode and validate one message body; raise ContractError with a readable reason."""
    if isinstance(body, dict):
        data: Any = body
    else:
        try:
            text = body.decode("utf-8") if isinstance(body, bytes) else body
            # Decimal, not float: 0.1 points must stay exactly 0.1 all the way to the platform.
            data = json.loads(text, parse_float=Decimal)
        except UnicodeDecodeError as exc:
            raise ContractError(
                f"body is not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from exc
        except json.JSONDecodeError as exc:
            raise ContractError(
                f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from exc
    if not isinstance(data, dict):
        raise ContractError(f"body is JSON but not an object (got {type(data).__name__})")
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    type_ = data.get("type") if isinstance(data.get("type"), str) else None
    if type_ is None:
        raise ContractError("field 'type': required", event_id=event_id)
    if type_ not in EVENT_TYPES:
        expected = ", ".join(EVENT_TYPES)
        raise ContractError(
            f"field 'type': unknown event type {type_!r} (expected one of {expected})",
            event_id=event_id,
            type_=type_,
        )
    try:
        return _EVENT.validate_python(data)
    except ValidationError as exc:
        raise ContractError(_describe(exc), event_id=event_id, type_=type_) from None


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False):
        # The first element of loc is the discriminator's tag; the field path follows it.
        path = ".".join(str(part) for part in error["loc"][1:]) or "(event)"
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"field '{path}': {message}")
    return "; ".join(problems)


def occurred(event: Event) -> dt.datetime:
    return event.occurred_at.astimezone(dt.UTC)
