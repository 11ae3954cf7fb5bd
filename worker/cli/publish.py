"""`recon publish FILE`: send JSON lines to the events exchange, as an order system would."""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO

import click
from kombu import Connection

from worker.settings import load_settings
from worker.tools.publishing import FALLBACK_ROUTING_KEY, publish_bodies


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    for line in stream:
        stripped = line.strip()
        if stripped:
            yield stripped


@click.command()
@click.argument("file", type=click.File("rb"))
@click.option(
    "--fallback-routing-key",
    default=FALLBACK_ROUTING_KEY,
    show_default=True,
    help="Routing key for a line without a usable 'type' (it is published, then rejected).",
)
def publish(file: IO[bytes], fallback_routing_key: str) -> None:
    """Publish each line of FILE (JSON lines; '-' for stdin) to RECON_EVENTS_EXCHANGE.

    The routing key is each event's `type`. Example: recon publish events.jsonl
    """
    settings = load_settings()
    with Connection(settings.broker_url, transport_options={"confirm_publish": True}) as conn:
        conn.ensure_connection(max_retries=3)
        sent = publish_bodies(
            conn, settings.events_exchange, _lines(file), fallback_routing_key=fallback_routing_key
        )
    click.echo(f"published {sent} event(s) to exchange {settings.events_exchange!r}")


def register(group: click.Group) -> None:
    group.add_command(publish)
