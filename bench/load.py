"""The benchmark's traffic: a scenario with a known number of coupons per bill, and a publisher
that remembers when each order's bill was published."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from kombu import Connection

from worker.tools.publishing import dumps, publish_bodies
from worker.tools.scenario import Scenario, build_scenario, register_with_sandbox


def scenario(orders: int, *, coupons_per_bill: int, prefix: str, seed: int) -> Scenario:
    """Every order: one customer, exactly ``coupons_per_bill`` coupons, one points redemption,
    then the bill; in that order (redemptions before their bill, so one task per order); no
    duplicates. API calls per order: one coupon PUT and one points update."""
    return build_scenario(
        orders,
        seed=seed,
        coupons_per_order=(coupons_per_bill, coupons_per_bill),
        points_share=1.0,
        duplicate_share=0.0,
        shuffle=False,
        prefix=prefix,
    )


@dataclass
class Publication:
    messages: int = 0
    started: float = 0.0  # epoch seconds of the first publish
    finished: float = 0.0
    bill_published_at: dict[str, float] = field(default_factory=dict)  # order_ref -> epoch s

    @property
    def seconds(self) -> float:
        return self.finished - self.started


def publish(
    broker_url: str,
    exchange: str,
    traffic: Scenario,
    *,
    orders_per_s: float | None = None,
    stop: threading.Event | None = None,
) -> Publication:
    """Publish every event with ``publish_bodies``; the time taken just before each publish
    is recorded for the bills (the message is handed to the broker right after). With
    ``orders_per_s`` the orders are spread evenly in time (an order's events go together);
    setting ``stop`` ends the publication between two orders."""
    publication = Publication()

    def bodies() -> Iterator[bytes]:
        order_ref, index = None, -1
        for event in traffic.events:
            if orders_per_s and event["order_ref"] != order_ref:
                order_ref, index = event["order_ref"], index + 1
                if publication.started:
                    due = publication.started + index / orders_per_s
                    pause = max(0.0, due - time.time())
                    if stop is not None and stop.wait(pause):
                        return
                    if stop is None:
                        time.sleep(pause)
            body = dumps(event)
            now = time.time()
            if not publication.started:
                publication.started = now
            if event["type"] == "transaction.completed":
                publication.bill_published_at[event["order_ref"]] = now
            yield body

    with Connection(broker_url, connect_timeout=10) as conn:
        publication.messages = publish_bodies(conn, exchange, bodies())
    publication.finished = time.time()
    return publication


__all__ = ["Publication", "Scenario", "publish", "register_with_sandbox", "scenario"]
