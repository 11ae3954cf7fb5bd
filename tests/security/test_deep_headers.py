"""A message whose headers nest as deep as one AMQP frame can hold does not stop a worker.

py-amqp decodes a header table recursively, one Python call per level, and any publisher on
`orders` can nest one about 18,000 levels deep in a 128 KiB frame. Before the worker made room
for that, the RecursionError escaped the worker's event loop: "Unrecoverable error", the worker
exited, and under a restart policy died again on the same message until its delivery limit.
"""

from __future__ import annotations

import sys

from kombu import Connection, Producer
from sqlalchemy import text

from tests.factories import events
from tests.workers import wait_for

#: About as deep as a header table fits in one frame of the default 128 KiB (7 bytes a level).
DEPTH = 18_000


def nested(depth: int) -> dict:
    top = inner = {}
    for _ in range(depth):
        inner["a"] = {}
        inner = inner["a"]
    return top


def stored_ids(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(text("SELECT event_id FROM inbox_events")).scalars())


def test_headers_nested_as_deep_as_a_frame_holds_do_not_stop_the_worker(workers, clean_db):
    worker = workers.start()
    deep = events.coupon_redeemed("deep-1", 7001, event_id="deep-headers")
    after = events.coupon_redeemed("deep-2", 7002, event_id="after-deep-headers")
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(DEPTH * 3)  # our own publisher encodes headers recursively too
    try:
        with Connection(workers.settings.broker_url) as conn:
            producer = Producer(conn.default_channel)
            for body, headers in ((deep, {"deep": nested(DEPTH)}), (after, {})):
                producer.publish(
                    events.body(body),
                    exchange=workers.settings.events_exchange,
                    routing_key=body["type"],
                    headers=headers,
                    content_type="application/json",
                    content_encoding="utf-8",
                )
    finally:
        sys.setrecursionlimit(limit)
    # Both are stored: the headers are nothing the intake reads, and the one behind the deep
    # message is not held up by it.
    wait_for(lambda: stored_ids(clean_db) >= {"deep-headers", "after-deep-headers"}, timeout=60)
    assert worker.poll() is None, workers.log_of("w1")[-2000:]
    assert "RecursionError" not in workers.log_of("w1")
