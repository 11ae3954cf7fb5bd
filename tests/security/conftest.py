"""A vhost of the security tests' own on the shared broker, and a private RabbitMQ node configured
as compose configures the product's (the shared node's configuration must not change)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.chaos.private import PrivateRabbit
from tests import services

ROOT = Path(__file__).parents[2]
RABBITMQ_CONF = ROOT / "deploy" / "rabbitmq" / "recon.conf"


@pytest.fixture(scope="session")
def capped_rabbit() -> Iterator[PrivateRabbit]:
    """A RabbitMQ node of this test run's own, started with deploy/rabbitmq/recon.conf."""
    node = PrivateRabbit(config=RABBITMQ_CONF.read_text())
    try:
        yield node
    finally:
        node.close()


@pytest.fixture(scope="module")
def vhost_url() -> Iterator[str]:
    """A fresh vhost on the shared broker, nothing declared in it."""
    url, name = services.create_vhost("recon_sec")
    try:
        yield url
    finally:
        services.delete_vhost(name)
