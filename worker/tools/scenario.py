"""Realistic order traffic for the demo and the benchmark (not used by the worker itself).

Each order: one customer, some coupons and perhaps a points redemption made at the till, then
the bill. Events are shuffled (a bill may arrive before its redemptions) and some are repeated,
as an at-least-once publisher would.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any

import requests


@dataclass
class Scenario:
    events: list[dict[str, Any]] = field(default_factory=list)
    extra_bodies: list[bytes] = field(default_factory=list)
    coupons: list[dict[str, Any]] = field(default_factory=list)
    points: list[dict[str, Any]] = field(default_factory=list)
    orders: list[str] = field(default_factory=list)
    invalid_coupon_order: str | None = None
    coupon_items: int = 0
    points_items: int = 0
    redeem_requests: int = 0

    @property
    def items(self) -> int:
        return self.coupon_items + self.points_items


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _customer(mobile: str) -> dict[str, str]:
    return {"identifier_type": "mobile", "identifier_value": mobile}


def build_scenario(
    orders: int,
    *,
    seed: int = 7,
    coupons_per_order: tuple[int, int] = (1, 3),
    points_share: float = 0.5,
    duplicate_share: float = 0.05,
    invalid_coupon: bool = False,
    malformed: bool = False,
    redeem_requests: int = 0,
    prefix: str = "ord",
    shuffle: bool = True,
) -> Scenario:
    rng = random.Random(seed)
    scenario = Scenario()
    next_coupon = 100_000 + rng.randrange(1_000_000) * 10
    for number in range(orders):
        order_ref = f"{prefix}-{seed}-{number:06d}"
        mobile = f"91{rng.randrange(10**9, 10**10)}"
        scenario.orders.append(order_ref)
        for _ in range(rng.randint(*coupons_per_order)):
            next_coupon += 1
            scenario.coupons.append(
                {
                    "redemption_id": next_coupon,
                    "customer": {"type": "mobile", "value": mobile},
                    "coupon_code": f"SAVE{next_coupon % 97}",
                }
            )
            scenario.events.append(
                {
                    "event_id": f"{order_ref}-c{next_coupon}",
                    "type": "coupon.redeemed",
                    "occurred_at": _now(),
                    "redemption_id": next_coupon,
                    "order_ref": order_ref,
                    "customer": _customer(mobile),
                    "coupon_code": f"SAVE{next_coupon % 97}",
                }
            )
            scenario.coupon_items += 1
        if rng.random() < points_share:
            redemption_id = f"P{seed}x{number:06d}"
            amount = f"{rng.randint(10, 500)}.{rng.randint(0, 999):03d}"
            scenario.points.append(
                {
                    "redemption_id": redemption_id,
                    "customer": {"type": "mobile", "value": mobile},
                    "points": amount,
                    "state": "active",
                }
            )
            scenario.events.append(
                {
                    "event_id": f"{order_ref}-p",
                    "type": "points.redeemed",
                    "occurred_at": _now(),
                    "redemption_id": redemption_id,
                    "order_ref": order_ref,
                    "customer": _customer(mobile),
                    "points": amount,
                }
            )
            scenario.points_items += 1
        scenario.events.append(
            {
                "event_id": f"{order_ref}-bill",
                "type": "transaction.completed",
                "occurred_at": _now(),
                "order_ref": order_ref,
                "bill_number": f"B-{seed}-{number:06d}",
                "bill_id": 10_000_000 + number,
                "bill_amount": f"{rng.randint(5, 900)}.{rng.randint(0, 99):02d}",
                "customer": _customer(mobile),
                "custom_fields": {"channel": rng.choice(["till", "web"])},
            }
        )
    if invalid_coupon and scenario.orders:
        # A coupon the platform never issued, on a bill with a valid one: 761 + 510, batch 762.
        order_ref = scenario.orders[0]
        bill = _bill_of(scenario.events, order_ref)
        scenario.events.append(
            {
                "event_id": f"{order_ref}-c-invalid",
                "type": "coupon.redeemed",
                "occurred_at": _now(),
                "redemption_id": 9_999_999_999,
                "order_ref": order_ref,
                "customer": bill["customer"],
            }
        )
        scenario.coupon_items += 1
        scenario.invalid_coupon_order = order_ref
    for number in range(redeem_requests):
        order_ref = scenario.orders[(number * 7 + 1) % len(scenario.orders)]
        bill = _bill_of(scenario.events, order_ref)
        scenario.events.append(
            {
                "event_id": f"{order_ref}-redeem-{number}",
                "type": "points.redeem_requested",
                "occurred_at": _now(),
                "order_ref": order_ref,
                "customer": bill["customer"],
                "points": "25",
                "notes": "redeemed at the till",
            }
        )
        scenario.redeem_requests += 1
    if shuffle:
        rng.shuffle(scenario.events)
    duplicates = [
        dict(e) for e in rng.sample(scenario.events, int(len(scenario.events) * duplicate_share))
    ]
    for duplicate in duplicates:
        scenario.events.insert(rng.randrange(len(scenario.events) + 1), duplicate)
    if scenario.invalid_coupon_order:
        _bill_after_its_coupons(scenario.events, scenario.invalid_coupon_order)
    if malformed:
        scenario.extra_bodies.append(
            b'{"event_id": "broken-1", "type": "coupon.redeemed", "order_ref": '
        )
    return scenario


def _bill_of(events: list[dict[str, Any]], order_ref: str) -> dict[str, Any]:
    return next(
        e for e in events if e["type"] == "transaction.completed" and e["order_ref"] == order_ref
    )


def _bill_after_its_coupons(events: list[dict[str, Any]], order_ref: str) -> None:
    """Shuffled, the bill could come first and each coupon go out in a call of its own; the demo
    shows one call for the customer's coupons: 761, 510 and the batch's 762."""
    bills = [
        e for e in events if e["type"] == "transaction.completed" and e["order_ref"] == order_ref
    ]
    for bill in bills:
        events.remove(bill)
    last_coupon = max(
        index
        for index, e in enumerate(events)
        if e["type"] == "coupon.redeemed" and e["order_ref"] == order_ref
    )
    events[last_coupon + 1 : last_coupon + 1] = bills


def register_with_sandbox(scenario: Scenario, sandbox_url: str, chunk: int = 2000) -> None:
    """Tell the sandbox about the redemptions the tills made before the bills existed."""
    with requests.Session() as http:
        for kind, redemptions in (("coupons", scenario.coupons), ("points", scenario.points)):
            for start in range(0, len(redemptions), chunk):
                answer = http.post(
                    f"{sandbox_url}/_admin/{kind}",
                    timeout=30,
                    json={"redemptions": redemptions[start : start + chunk]},
                )
                answer.raise_for_status()
