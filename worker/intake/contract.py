"""The event contract (version 1): what order systems publish, validated at the door.

Unknown fields are kept (``extra="allow"``), never rejected. A message that breaks the contract
becomes a ``ContractError`` whose text names the field, for the inbox's rejected row.

What the world sends is bounded before it is parsed, on the raw bytes (``worker/intake/wire.py``):
a 50,000-deep array must not reach a recursive parser.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
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

from worker.intake.wire import (
    ContractError,
    clean_text,
    decode_body,
    find_unstorable,
)

EVENT_TYPES = (
    "coupon.redeemed",
    "points.redeemed",
    "points.redeem_requested",
    "transaction.completed",
)

# Java's long: the platform stores coupon redemption ids and bill ids in one.
MAX_LONG = 2**63 - 1
MAX_BILL_ID = MAX_LONG


def _identifier_text(value: Any) -> Any:
    """Identifiers the platform keeps as text may come as JSON integers: keep their exact text."""
    if isinstance(value, bool):
        raise ValueError("must be text or a whole number, not true/false")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return str(int(value))
        raise ValueError("must be text or a whole number (got a number with a fraction)")
    return value


def _iso_timestamp(value: Any) -> dt.datetime:
    example = "e.g. 2026-12-01T10:15:00+01:00"
    if not isinstance(value, str):
        raise ValueError(f"must be ISO 8601 text with an offset ({example})")
    if len(value) > 64:
        raise ValueError("is longer than 64 characters")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"is not an ISO 8601 timestamp ({example})") from None
    if parsed.tzinfo is None:
        raise ValueError(f"has no UTC offset ({example})")
    return parsed


Text = Annotated[StrictStr, Field(min_length=1, max_length=128)]
#: Text for the platform, which order systems may send as a JSON integer.
Identifier = Annotated[
    StrictStr, Field(min_length=1, max_length=128), BeforeValidator(_identifier_text)
]
#: The platform's shorter identifiers (points redemption ids, program ids, validation codes).
ShortText = Annotated[StrictStr, Field(min_length=1, max_length=64)]
ShortIdentifier = Annotated[
    StrictStr, Field(min_length=1, max_length=64), BeforeValidator(_identifier_text)
]
Timestamp = Annotated[dt.datetime, BeforeValidator(_iso_timestamp)]
CouponId = Annotated[StrictInt, Field(ge=1, le=MAX_LONG)]


class Customer(BaseModel):
    model_config = ConfigDict(frozen=True)

    identifier_type: Literal["mobile", "email", "externalId", "cardnumber"]
    identifier_value: Identifier


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    event_id: Text
    occurred_at: Timestamp
    order_ref: Identifier
    customer: Customer


#: The platform's points columns hold 15 digits before the decimal point.
MAX_POINTS = Decimal(10) ** 15


def _bounded_points(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("must be a finite number")
    if abs(value) >= MAX_POINTS:
        raise ValueError("must be below 1,000,000,000,000,000")
    return value


def _points_with_three_places(value: Decimal) -> Decimal:
    _bounded_points(value)
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -3 and value != value.quantize(Decimal("0.001")):
        raise ValueError("must have at most 3 decimal places")
    return value


class CouponRedeemed(_Event):
    type: Literal["coupon.redeemed"]
    redemption_id: CouponId
    coupon_code: Text | None = None


class PointsRedeemed(_Event):
    type: Literal["points.redeemed"]
    redemption_id: ShortIdentifier | None = None
    external_reference_number: Identifier | None = None
    points: Decimal
    program_id: ShortIdentifier | None = None
    validation_code: ShortText | None = None

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
    program_id: ShortIdentifier | None = None
    validation_code: ShortText | None = None
    notes: Annotated[StrictStr, Field(max_length=1000)] | None = None
    custom_fields: dict[StrictStr, StrictStr] | None = None
    skip_validation: StrictBool = False

    @field_validator("customer")
    @classmethod
    def _mobile_only(cls, customer: Customer) -> Customer:
        if customer.identifier_type != "mobile":
            raise ValueError("points are redeemed by mobile number: identifier_type must be mobile")
        return customer

    _check_points = field_validator("points")(_bounded_points)


class RedemptionRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: Literal["coupon", "points"]
    redemption_id: StrictInt | ShortText

    @model_validator(mode="after")
    def _coupon_ids_are_integers(self) -> RedemptionRef:
        if self.kind == "coupon":
            if not isinstance(self.redemption_id, int):
                raise ValueError("a coupon redemption_id is an integer")
            if not 1 <= self.redemption_id <= MAX_LONG:
                raise ValueError(f"a coupon redemption_id is between 1 and {MAX_LONG}")
        return self

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, str(self.redemption_id)


class TransactionCompleted(_Event):
    type: Literal["transaction.completed"]
    bill_number: Identifier
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
    data = body if isinstance(body, dict) else decode_body(body)
    if not isinstance(data, dict):
        raise ContractError(f"body is JSON but not an object (got {_json_type(data)})")
    event_id = clean_text(data.get("event_id"), limit=128)
    type_ = clean_text(data.get("type"), limit=40)
    problem = find_unstorable(data)
    if problem:
        raise ContractError(problem, event_id=event_id, type_=type_)
    if "type" not in data:
        raise ContractError("field 'type': required", event_id=event_id)
    if data["type"] not in EVENT_TYPES:
        expected = ", ".join(EVENT_TYPES)
        shown = ascii(data["type"])[:60]
        raise ContractError(
            f"field 'type': unknown event type {shown} (expected one of {expected})",
            event_id=event_id,
            type_=type_,
        )
    try:
        return _EVENT.validate_python(data)
    except ValidationError as exc:
        raise ContractError(_describe(exc), event_id=event_id, type_=type_) from None


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number")


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
