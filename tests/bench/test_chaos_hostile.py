"""The chaos suite's hostile messages: the accounting `published = inbox rows + dead letters` is
exact only if no two of them could be de-duplicated into one, and every kind is really sent."""

from __future__ import annotations

import json

from bench.chaos import hostile


def test_every_hostile_message_is_unique_and_every_kind_is_present() -> None:
    junk = hostile.messages(2000, run="t1", seed=3)

    bodies = [body for body, _, _ in junk]
    assert len(set(bodies)) == len(bodies)
    assert set(hostile.kinds_of(junk)) == set(hostile.KINDS)


def test_the_hostile_kinds_are_what_they_claim() -> None:
    junk = hostile.messages(3000, run="t2", seed=4)
    by_kind: dict[str, list[bytes]] = {}
    for body, _, kind in junk:
        by_kind.setdefault(kind, []).append(body)

    assert all(b"\x00" in body for body in by_kind["nul_raw"])
    assert all(b"\\u0000" in body for body in by_kind["nul_escaped"])
    assert all(b"\\ud800" in body for body in by_kind["lone_surrogate"])
    depths = [body.count(b"[") for body in by_kind["nesting_50_to_50000"]]
    assert min(depths) >= 50
    assert max(depths) > 10_000
    assert all(len(body) > 64 * 1024 for body in by_kind["huge_field"])
    for body in by_kind["truncated_json"]:
        try:
            json.loads(body)
        except ValueError:
            continue
        raise AssertionError(f"parses: {body!r}")
    # Valid bills: they parse (within Python's own limit) and keep the unknown field.
    for body in by_kind["valid_deep_unknown_fields"]:
        event = json.loads(body)
        assert event["type"] == "transaction.completed"
        assert "x_extra" in event


def test_interleaving_keeps_every_message_and_the_order_of_the_valid_ones() -> None:
    junk = hostile.messages(500, run="t3", seed=5)
    valid = [(f'{{"n":{n}}}'.encode(), "coupon.redeemed") for n in range(40)]

    mixed = hostile.interleave(junk, valid)

    assert len(mixed) == len(junk) + len(valid)
    assert [m for m in mixed if m in valid] == valid
    first, last = mixed.index(valid[0]), mixed.index(valid[-1])
    assert last - first > len(mixed) // 2  # spread through, not bunched at one end
