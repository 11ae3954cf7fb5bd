"""`recon publish` says which lines no queue received (issue 13, finding 6: it reported
"published 5 event(s)" for lines that went nowhere, with neither `mandatory` nor confirms)."""

from __future__ import annotations

import json
import subprocess

from kombu import Connection

from tests import shipped
from worker.queues import declare_topology, events_queue

EVENT_TYPES = ["coupon.redeemed", "transaction.completed"]


def recon_publish(lines: list[dict], broker_url: str, tmp_path) -> subprocess.CompletedProcess:
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return subprocess.run(
        [shipped.RECON, "publish", str(path)],
        env=shipped.product_env({"RECON_BROKER_URL": broker_url}),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _events_queue_depth(url: str) -> int:
    """Declare the events queue as the worker does (bound to two types), purge it if asked."""
    with Connection(url) as conn:
        queue = events_queue(
            exchange="orders", queue="recon.events", routing_keys=EVENT_TYPES, delivery_limit=10
        )
        declare_topology(conn, events=queue, task_queue_names=[])
        return queue(conn.default_channel).queue_declare(passive=True).message_count


def test_a_line_no_queue_receives_is_named_and_the_exit_status_is_1(vhost_url, tmp_path):
    before = _events_queue_depth(vhost_url)
    lines = [
        {"type": "coupon.redeemed", "event_id": "p-1"},
        {"type": "refund.issued", "event_id": "p-2"},  # nothing is bound for it
        {"type": "transaction.completed", "event_id": "p-3"},
    ]

    result = recon_publish(lines, vhost_url, tmp_path)

    assert result.returncode == 1
    assert "line 2: unroutable: no queue is bound for 'refund.issued'" in result.stderr
    assert "published 2 event(s) to exchange 'orders'; 1 unroutable" in result.stderr
    assert _events_queue_depth(vhost_url) == before + 2


def test_lines_that_all_reach_a_queue_are_counted_and_exit_0(vhost_url, tmp_path):
    before = _events_queue_depth(vhost_url)
    lines = [{"type": "coupon.redeemed", "event_id": f"ok-{n}"} for n in range(5)]

    result = recon_publish(lines, vhost_url, tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "published 5 event(s) to exchange 'orders'"
    assert _events_queue_depth(vhost_url) == before + 5
