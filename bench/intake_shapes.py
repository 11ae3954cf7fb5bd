"""Hostile message bodies of a chosen size, shaped to find super-linear work in the intake.

Each builder returns about ``size`` bytes (never more) that an order system could publish: a
valid coupon event carrying one large extra field, or the start of one cut short. The shapes are
the ones a backtracking scanner, a recursive parser or a per-item walk is slow on. The benchmark
(``python -m bench.intake_check``) times them at fixed sizes; the security tests
(tests/security/test_intake_linear.py) draw their parameters with hypothesis.

Nothing here reads the intake's own limits: the shapes stay within the published contract
(256 KiB, 32 levels, field names of 256 characters) by their own numbers.
"""

from __future__ import annotations

from collections.abc import Callable

KIB = 1024

#: The head of a valid coupon event; the hostile part is the value of "x" that follows.
_HEAD = (
    b'{"event_id":"hostile-1","type":"coupon.redeemed","occurred_at":"2026-12-01T10:15:00+01:00",'
    b'"order_ref":"o-1","customer":{"identifier_type":"mobile","identifier_value":"9150710507"},'
    b'"redemption_id":1,"x":'
)


def _event(payload: bytes, tail: bytes = b"}") -> bytes:
    return _HEAD + payload + tail


def _fill(size: int, *, open_: bytes, unit: bytes, close: bytes, sep: bytes = b"") -> bytes:
    """``open_ unit sep unit sep ... close`` as an event's "x", as many units as fit in ``size``."""
    room = size - len(_event(open_ + close))
    count = max(1, (room + len(sep)) // (len(unit) + len(sep)))
    return _event(open_ + sep.join([unit] * count) + close)


def escaped_quotes(size: int, *, terminated: bool) -> bytes:
    r"""A string of ``\"`` pairs, closed or left open: quadratic for ``"(?:[^"\\]|\\.)*"``."""
    if terminated:
        return _fill(size, open_=b'"', unit=b'\\"', close=b'"')
    room = size - len(_HEAD) - 1
    return _HEAD + b'"' + b'\\"' * (room // 2)


def backslash_run(size: int, *, odd: bool) -> bytes:
    r"""One long run of backslashes in a string: an even run is text, an odd one escapes the
    closing quote, so the string never ends."""
    room = size - len(_event(b'""'))
    run = room - (room % 2) - (1 if odd else 0)
    return _event(b'"' + b"\\" * max(run, 1) + b'"')


def long_keys(size: int, *, key_chars: int) -> bytes:
    """An object of distinct field names, each ``key_chars`` long (at most 256, the contract's)."""
    key_chars = max(8, min(key_chars, 256))
    unit = key_chars + 5  # "key":0 and a comma
    count = max(1, (size - len(_event(b"{}")) + 1) // unit)
    keys = (b'"%0*d":0' % (key_chars, index) for index in range(count))
    return _event(b"{" + b",".join(keys) + b"}")


def wide_array(size: int, *, item: bytes) -> bytes:
    """One array of many small items: ``"a"``, ``{}``, ``[]``, ``null``, ``1``, ..."""
    return _fill(size, open_=b"[", unit=item, close=b"]", sep=b",")


def small_numbers(size: int) -> bytes:
    """Many small integers (60,000 of them in 256 KiB): one parser callback each."""
    room = size - len(_event(b"[]"))
    numbers: list[bytes] = []
    used = 0
    while True:
        text = b"%d" % (len(numbers) % 1000)
        if used + len(text) + 1 > room:
            break
        numbers.append(text)
        used += len(text) + 1
    return _event(b"[" + b",".join(numbers) + b"]")


def deep_within_limit(size: int, *, depth: int) -> bytes:
    """Side by side, many arrays nested ``depth`` levels (under the event's own two)."""
    depth = max(1, min(depth, 30))
    unit = b"[" * depth + b"1" + b"]" * depth
    return _fill(size, open_=b"[", unit=unit, close=b"]", sep=b",")


#: The benchmark's fixed set: one body per shape and size.
SHAPES: dict[str, Callable[[int], bytes]] = {
    "escaped quotes, unterminated": lambda size: escaped_quotes(size, terminated=False),
    "escaped quotes, terminated": lambda size: escaped_quotes(size, terminated=True),
    "backslash run, even": lambda size: backslash_run(size, odd=False),
    "backslash run, odd (unterminated)": lambda size: backslash_run(size, odd=True),
    "long keys (256 chars)": lambda size: long_keys(size, key_chars=256),
    'wide array of "a"': lambda size: wide_array(size, item=b'"a"'),
    "wide array of {}": lambda size: wide_array(size, item=b"{}"),
    "small numbers": small_numbers,
    "nesting 30 deep, side by side": lambda size: deep_within_limit(size, depth=30),
}
