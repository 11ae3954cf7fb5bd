"""The event contract (version 1): what order systems publish, validated at the door.

Unknown fields are kept (``extra="allow"``), never rejected. A message that breaks the contract
becomes a ``ContractError`` whose text names the field, for the inbox's rejected row.

What the world sends is bounded before it is parsed: the body's size and nesting depth are checked
on the raw bytes (a 50,000-deep array must not reach a recursive parser), in time linear in the
size whatever the bytes are (``check_bounds``; no regular expression that can backtrack); numbers
are bounded as they are read, and every string, key or value, is refused if it holds NUL or a lone
surrogate (PostgreSQL refuses the first in ``text`` and ``jsonb``; the second cannot be encoded).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import json
import re
from array import array
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from itertools import accumulate
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

EVENT_TYPES = (
    "coupon.redeemed",
    "points.redeemed",
    "points.redeem_requested",
    "transaction.completed",
)

#: Bounds on what the intake reads (README, "Event contract"). An event is a few hundred bytes;
#: a bill listing many redemptions with custom fields stays far below these.
MAX_BODY_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_INTEGER_DIGITS = 40
MAX_NUMBER_CHARS = 64
MAX_KEY_CHARS = 256

# Java's long: the platform stores coupon redemption ids and bill ids in one.
MAX_LONG = 2**63 - 1
MAX_BILL_ID = MAX_LONG

# nesting_depth keeps the brackets of a body as bytes 1 (opening) and 255 (closing: -1 as a
# signed byte), everything else deleted, in one C pass.
_BRACKETS = bytes.maketrans(b"[{]}", bytes([1, 1, 255, 255]))
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


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


def decode_body(body: bytes | str) -> Any:
    """JSON from the wire, refused before parsing when it is too big or nests too deep."""
    raw = body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body
    check_bounds(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError(f"body is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        with _collector_paused():
            # Decimal, not float: 0.1 points must stay exactly 0.1 all the way to the platform.
            return json.loads(
                text,
                parse_float=_bounded_decimal,
                parse_int=_bounded_int,
                parse_constant=_no_constant,
            )
    except json.JSONDecodeError as exc:
        raise ContractError(
            f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        # nesting_depth bounds valid JSON; this only guards odd invalid input it misjudged.
        raise ContractError(f"body nests over the intake's limit of {MAX_DEPTH} levels") from None


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    # The parser makes only acyclic containers, yet a body of 100,000 small arrays triggers
    # dozens of cyclic-garbage passes over the worker's whole heap: two thirds of that body's
    # time (bench/intake_check.py). Paused only if it ran, so a caller's own pause is kept.
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


def check_bounds(raw: bytes) -> None:
    """Every check made before parsing: size, then nesting depth; ContractError if one fails.

    Linear in the size of ``raw`` (a pure function over the bytes, for any consumer to call).
    """
    if len(raw) > MAX_BODY_BYTES:
        raise ContractError(
            f"body is {len(raw):,} bytes, over the intake's limit of {MAX_BODY_BYTES:,}"
        )
    depth = nesting_depth(raw)
    if depth > MAX_DEPTH:
        raise ContractError(
            f"body nests {depth:,} levels deep, over the intake's limit of {MAX_DEPTH}"
        )


def nesting_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects, read from the bytes without parsing them.

    Linear in the body, whatever it holds: a few passes of ``bytes`` methods and no regular
    expression (a backtracking pattern for strings took minutes on an unterminated run of ``\\"``).
    Escapes are dropped first, pairing backslashes from the left as JSON does, so every quote
    left delimits a string; the brackets outside strings are what nests. On valid JSON this is
    the parser's own depth; on invalid JSON, at least the depth the parser reaches before it fails.
    """
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside_strings = b"".join(unescaped.split(b'"')[::2])
    brackets = outside_strings.translate(_BRACKETS, _NOT_BRACKETS)
    # The running sum of +1 and -1 is the depth at each bracket, summed in C.
    return max(0, max(accumulate(array("b", brackets)), default=0))


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise ContractError(
            f"a number has {len(text.lstrip('-')):,} digits, over the intake's limit of "
            f"{MAX_INTEGER_DIGITS}"
        )
    return int(text)


def _bounded_decimal(text: str) -> Decimal:
    if len(text) > MAX_NUMBER_CHARS:
        raise ContractError(
            f"a number is {len(text):,} characters long, over the intake's limit of "
            f"{MAX_NUMBER_CHARS}"
        )
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ContractError(f"a number cannot be read: {text[:20]}") from None
    if abs(value.adjusted()) > 1000:
        raise ContractError(f"a number is out of range: {text[:20]}")
    return value


def _no_constant(name: str) -> Any:
    raise ContractError(f"body is not JSON: {name} is not a JSON number")


def find_unstorable(data: Any) -> str | None:
    """Name the first string (key or value) holding NUL or a lone surrogate, or the first field
    name over the limit, if any."""
    return _name_unstorable(data) if _any_unstorable(data) else None


def _any_unstorable(data: Any) -> bool:
    # The walk every message takes, so it builds no paths: naming one (f-strings for 60,000
    # array items) cost five times the walk itself.
    search = _UNSTORABLE.search
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if search(value):
                return True
        elif isinstance(value, dict):
            for key in value:
                if len(key) > MAX_KEY_CHARS or search(key):
                    return True
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def _name_unstorable(data: Any) -> str | None:
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            problem = _unstorable(value)
            if problem:
                return f"field '{path or '(body)'}': {problem}"
        elif isinstance(value, dict):
            for key, item in value.items():
                child = f"{path}.{_shown(key)}" if path else _shown(key)
                problem = _unstorable(key)
                if problem:
                    return f"field name '{child[:200]}': {problem}"
                if len(key) > MAX_KEY_CHARS:
                    return f"field name '{child[:60]}...': longer than {MAX_KEY_CHARS} characters"
                stack.append((child[:200], item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{index}]", item) for index, item in enumerate(value))
    return None


def _unstorable(text: str) -> str | None:
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains a NUL character (\\u0000), which cannot be stored"
    return f"contains a lone surrogate ({ascii(found.group())[1:-1]}), which is not text"


def _shown(key: str) -> str:
    # ascii() escapes NUL and surrogates, so the reason itself is always storable.
    return key if key.isprintable() and key.isascii() else ascii(key)[1:-1]


def clean_text(value: Any, *, limit: int) -> str | None:
    """``value`` if it is a storable string of at most ``limit`` characters, else None."""
    if isinstance(value, str) and len(value) <= limit and _UNSTORABLE.search(value) is None:
        return value
    return None


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
