"""The wire: what the intake checks on a body's raw bytes before and while it is parsed.

Bounded work whatever the bytes are: the size and nesting depth are read off the raw bytes in
time linear in the size (no regular expression that can backtrack: one took minutes on an
unterminated run of escaped quotes), numbers are bounded as they are read, and every string, key or
value, is refused if it holds NUL or a lone surrogate (PostgreSQL refuses the first in ``text`` and
``jsonb``; the second cannot be encoded). Pure functions, for any consumer to call.
"""

from __future__ import annotations

import contextlib
import gc
import json
import re
from array import array
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation
from itertools import accumulate
from typing import Any

#: Bounds on what the intake reads (README, "Event contract"). An event is a few hundred bytes;
#: a bill listing many redemptions with custom fields stays far below these.
MAX_BODY_BYTES = 256 * 1024
MAX_DEPTH = 32
MAX_INTEGER_DIGITS = 40
MAX_NUMBER_CHARS = 64
MAX_KEY_CHARS = 256

# nesting_depth keeps the brackets of a body as bytes 1 (opening) and 255 (closing: -1 as a
# signed byte), everything else deleted, in one C pass.
_BRACKETS = bytes.maketrans(b"[{]}", bytes([1, 1, 255, 255]))
_NOT_BRACKETS = bytes(byte for byte in range(256) if byte not in b"[]{}")
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


class ContractError(ValueError):
    """The message is not a version-1 event; ``reason`` says which field and why."""

    def __init__(self, reason: str, *, event_id: str | None = None, type_: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.event_id = event_id
        self.type = type_


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
