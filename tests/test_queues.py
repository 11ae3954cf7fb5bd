"""The broker topology as declared (issue 15): every queue quorum, countdowns that fit native
delayed delivery, and the task queues' broker limit above the tasks' own."""

from __future__ import annotations

from kombu.transport.native_delayed_delivery import calculate_routing_key

from worker.queues import (
    DEAD_QUEUE,
    TASK_EXCHANGE,
    TASK_LIMIT_MARGIN,
    TASK_QUEUE,
    queue_of_routing_key,
    task_queue,
    task_queue_names,
)
from worker.reconcile.tasks import whole_seconds


def test_every_task_queue_is_quorum_with_a_broker_limit_above_the_tasks_own():
    for name in task_queue_names():
        arguments = task_queue(name, delivery_limit=7).queue_arguments
        assert arguments["x-queue-type"] == "quorum"
        assert arguments["x-delivery-limit"] == 7 + TASK_LIMIT_MARGIN
        assert arguments["x-dead-letter-exchange"] == DEAD_QUEUE.exchange.name
    assert TASK_EXCHANGE.type == "topic"  # native delayed delivery cannot route through direct


def test_the_dead_letter_queue_is_quorum_and_can_lose_nothing():
    assert DEAD_QUEUE.queue_arguments == {"x-queue-type": "quorum"}


def test_a_delayed_message_names_its_queue_again():
    delayed = calculate_routing_key(37, TASK_QUEUE)
    assert delayed != TASK_QUEUE
    assert queue_of_routing_key(delayed) == TASK_QUEUE
    assert queue_of_routing_key(TASK_QUEUE) == TASK_QUEUE


def test_countdowns_are_whole_seconds_of_at_least_one():
    assert whole_seconds(0.2) == 1  # kombu refuses a delay that rounds down to 0
    assert whole_seconds(1.5) == 2
    assert whole_seconds(3) == 3
    assert whole_seconds(0) == 0  # no countdown at all
