"""The intake fed through real RabbitMQ: a message published, fetched and handed to the consumer."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from celery import Celery
from kombu import Connection, Exchange, Producer, Queue
from kombu.message import Message
from sqlalchemy import Engine

from tests.conftest import SANDBOX_PASSWORD, SANDBOX_USER
from worker.intake.consumer import Enqueuer, events_queue_for, handle_message
from worker.queues import DEAD_QUEUE, TASK_QUEUE, declare_topology
from worker.settings import Settings, load_settings


class Broker:
    """One vhost with the product's topology: publish like an order system, fetch like the
    intake consumer, and look into the dead-letter and task queues."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connection = Connection(
            settings.broker_url, transport_options={"confirm_publish": True}
        )
        self.events = events_queue_for(settings)
        self.app = Celery("recon-test", broker=settings.broker_url, set_as_current=False)
        self.app.conf.broker_transport_options = {"confirm_publish": True}
        self.enqueuer = Enqueuer(self.app)
        declare_topology(self.connection, events=self.events, task_queue_names=[TASK_QUEUE])
        self.channel = self.connection.channel()
        self.channel.auto_decode = False  # as the intake consumer's channel: bytes as they came
        self.purge()

    def purge(self) -> None:
        for name in (self.events.name, DEAD_QUEUE.name, TASK_QUEUE):
            self.channel.queue_purge(name)

    def publish(self, body: bytes, routing_key: str = "coupon.redeemed", **properties) -> None:
        exchange = Exchange(self.settings.events_exchange, type="topic", durable=True)
        Producer(self.channel, exchange=exchange).publish(
            body,
            routing_key=routing_key,
            content_type=properties.pop("content_type", "application/json"),
            content_encoding="utf-8",
            delivery_mode=2,
            **properties,
        )

    def fetch(self, queue: Queue | None = None, timeout: float = 10.0) -> Message:
        bound = (queue or self.events)(self.channel)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = bound.get(no_ack=False, accept=None)
            if message is not None:
                return message
            time.sleep(0.02)
        raise AssertionError(f"nothing arrived in {bound.name} within {timeout} s")

    def depth(self, name: str) -> int:
        return self.channel.queue_declare(name, passive=True).message_count

    def close(self) -> None:
        self.app.close()
        self.connection.release()


@pytest.fixture
def broker_settings(pg_url: str, amqp_url: str) -> Settings:
    return load_settings(
        {
            "RECON_DATABASE_URL": pg_url,
            "RECON_BROKER_URL": amqp_url,
            "LOYALTY_API_USERNAME": SANDBOX_USER,
            "LOYALTY_API_PASSWORD": SANDBOX_PASSWORD,
        }
    )


@pytest.fixture
def broker(broker_settings: Settings) -> Iterator[Broker]:
    real = Broker(broker_settings)
    yield real
    real.purge()
    real.close()


def receive(broker: Broker, engine: Engine, body: bytes, routing_key: str = "coupon.redeemed"):
    """Publish ``body``, fetch it from the events queue, and let the intake give it its fate."""
    broker.publish(body, routing_key)
    message = broker.fetch()
    fate = handle_message(
        message, engine=engine, enqueue=broker.enqueuer, dead_letter=broker.enqueuer.dead_letter
    )
    return fate, message
