"""Hostile messages for phase (e): every kind the intake must survive, each one unique.

Uniqueness makes the accounting exact: the inbox de-duplicates on ``event_id`` (or on a hash of
the body when there is none), so two equal hostile messages would be stored once and look like
a loss. Every message carries its own tag ``h<run>-<n>`` (in its ``event_id``, ``order_ref``
or first bytes).
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections import Counter
from collections.abc import Callable

ROUTING_KEY = "coupon.redeemed"  # bound to the events queue: garbage reaches the intake
BILL_KEY = "transaction.completed"

Maker = Callable[[random.Random, str], tuple[bytes, str]]


def _event(tag: str) -> dict[str, object]:
    return {
        "event_id": tag,
        "type": "coupon.redeemed",
        "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
        "redemption_id": 900_000_000 + int(tag.rsplit("-", 1)[1]),
        "order_ref": f"hx-{tag}",
        "customer": {"identifier_type": "mobile", "identifier_value": "919800000000"},
        "coupon_code": "HOSTILE",
    }


def _dump(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def random_bytes(rng: random.Random, tag: str) -> tuple[bytes, str]:
    return tag.encode() + rng.randbytes(rng.randint(1, 2000)), ROUTING_KEY


def nul_raw(rng: random.Random, tag: str) -> tuple[bytes, str]:
    body = _dump(_event(tag))
    field = rng.choice([b'"order_ref":"hx-', b'"event_id":"h', b'"coupon_code":"HOS'])
    return body.replace(field, field + b"\x00", 1), ROUTING_KEY


def nul_escaped(rng: random.Random, tag: str) -> tuple[bytes, str]:
    event = _event(tag)
    name = rng.choice(["event_id", "order_ref", "coupon_code", "type"])
    event[name] = f"{event[name]}\u0000x"
    return _dump(event), ROUTING_KEY  # json.dumps writes it as the six characters \u0000


def truncated(rng: random.Random, tag: str) -> tuple[bytes, str]:
    body = _dump(_event(tag))
    cut = rng.randint(len(tag) + 16, len(body) - 1)  # the tag survives the cut
    return body[:cut], ROUTING_KEY


def array(rng: random.Random, tag: str) -> tuple[bytes, str]:
    shapes: list[object] = [[_event(tag)], [tag, 1, None], [], [[tag]]]
    shape = shapes[rng.randrange(len(shapes))]
    return _dump(shape if shape else [tag]), ROUTING_KEY


def wrong_type(rng: random.Random, tag: str) -> tuple[bytes, str]:
    event = _event(tag)
    name, value = rng.choice(
        [
            ("redemption_id", "not-a-number"),
            ("redemption_id", 1.5),
            ("redemption_id", True),
            ("redemption_id", -7),
            ("redemption_id", 2**70),
            ("customer", ["mobile", "919800000000"]),
            ("customer", "919800000000"),
            ("occurred_at", 12345),
            ("occurred_at", "yesterday"),
            ("type", 42),
            ("order_ref", {"nested": True}),
            ("event_id", None),
        ]
    )
    event[name] = value
    if name == "event_id":
        event["order_ref"] = f"hx-{tag}"
    return _dump(event), ROUTING_KEY


def missing(rng: random.Random, tag: str) -> tuple[bytes, str]:
    event = _event(tag)
    for name in rng.sample(["type", "order_ref", "customer", "redemption_id", "occurred_at"], 2):
        del event[name]
    return _dump(event), ROUTING_KEY


def huge(rng: random.Random, tag: str) -> tuple[bytes, str]:
    event = _event(tag)
    name = rng.choice(["coupon_code", "order_ref", "event_id", "note"])
    event[name] = f"{tag}-" + "x" * rng.randint(64 * 1024, 1024 * 1024)
    return _dump(event), ROUTING_KEY


def surrogate(rng: random.Random, tag: str) -> tuple[bytes, str]:
    event = _event(tag)
    name = rng.choice(["event_id", "type", "order_ref", "coupon_code"])
    body = _dump(event).decode()
    # A lone surrogate written as a JSON escape, as a broken producer would.
    old = f'"{name}":"'
    return body.replace(old, old + "\\ud800", 1).encode(), ROUTING_KEY


def nesting(rng: random.Random, tag: str) -> tuple[bytes, str]:
    depth = round(50 * 1000 ** rng.random())  # 50 .. 50,000, log-uniform
    inner = "[" * depth + "]" * depth
    if rng.random() < 0.5:
        return f'{{"event_id":"{tag}","deep":{inner}}}'.encode(), ROUTING_KEY
    return f'[["{tag}"],{inner}]'.encode(), ROUTING_KEY


def valid_deep_unknown(rng: random.Random, tag: str) -> tuple[bytes, str]:
    """A *valid* bill (its own order, no redemptions) carrying an unknown field nested 50-600
    deep: the contract keeps unknown fields, so this one must be accepted."""
    depth = rng.randint(50, 600)
    event = {
        "event_id": tag,
        "type": BILL_KEY,
        "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
        "order_ref": f"hx-{tag}",
        "bill_number": f"HB-{tag}",
        "bill_id": 500_000_000 + int(tag.rsplit("-", 1)[1]),
        "bill_amount": "12.50",
        "customer": {"identifier_type": "mobile", "identifier_value": "919800000001"},
    }
    body = _dump(event)[:-1] + (',"x_extra":' + '{"a":' * depth + "1" + "}" * depth + "}").encode()
    return body, BILL_KEY


#: kind -> (weight, maker). Huge messages are few: they are big.
KINDS: dict[str, tuple[float, Maker]] = {
    "random_bytes": (12, random_bytes),
    "nul_raw": (10, nul_raw),
    "nul_escaped": (10, nul_escaped),
    "truncated_json": (10, truncated),
    "array": (8, array),
    "wrong_type": (12, wrong_type),
    "missing_fields": (10, missing),
    "huge_field": (0.4, huge),
    "lone_surrogate": (10, surrogate),
    "nesting_50_to_50000": (10, nesting),
    "valid_deep_unknown_fields": (7.6, valid_deep_unknown),
}


def messages(count: int, *, run: str, seed: int) -> list[tuple[bytes, str, str]]:
    """``count`` unique hostile messages: (body, routing key, kind)."""
    rng = random.Random(seed)
    names = list(KINDS)
    weights = [KINDS[name][0] for name in names]
    out = []
    for number in range(count):
        # Every kind at least a few times, then by weight.
        kind = names[number] if number < len(names) else rng.choices(names, weights)[0]
        body, key = KINDS[kind][1](rng, f"h{run}-{number}")
        out.append((body, key, kind))
    return out


def kinds_of(junk: list[tuple[bytes, str, str]]) -> dict[str, int]:
    return dict(sorted(Counter(kind for _, _, kind in junk).items()))


def interleave(
    junk: list[tuple[bytes, str, str]], valid: list[tuple[bytes, str]]
) -> list[tuple[bytes, str]]:
    """The valid messages spread evenly through the hostile ones, in their own order."""
    out: list[tuple[bytes, str]] = []
    step = max(1, len(junk) // max(1, len(valid)))
    pending = list(valid)
    for index, (body, key, _) in enumerate(junk):
        if pending and index % step == 0:
            out.append(pending.pop(0))
        out.append((body, key))
    out.extend(pending)
    return out
