"""`recon publish FILE`: send JSON lines to the events exchange, as an order system would."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import IO

import click
from kombu import Connection

from worker.settings import load_settings
from worker.tools.publishing import (
    FALLBACK_ROUTING_KEY,
    PUBLISHED,
    REFUSED,
    UNROUTABLE,
    publish_lines,
)

#: Lines named per fate; the summary counts them all.
SHOWN_PER_FATE = 20


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    for number, line in enumerate(stream, start=1):
        stripped = line.strip()
        if stripped:
            yield number, stripped


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

    The routing key is each event's `type`. Every line is confirmed by the broker and published
    `mandatory`: a line no queue received (unroutable) or the broker refused is named, and the
    exit status is 1. Example: recon publish events.jsonl
    """
    settings = load_settings()
    counts: Counter[str] = Counter()
    with Connection(settings.broker_url, transport_options={"confirm_publish": True}) as conn:
        conn.ensure_connection(max_retries=3)
        for fate in publish_lines(
            conn, settings.events_exchange, _lines(file), fallback_routing_key=fallback_routing_key
        ):
            counts[fate.fate] += 1
            if fate.fate != PUBLISHED and counts[fate.fate] <= SHOWN_PER_FATE:
                click.echo(f"line {fate.line}: {fate.fate}: {fate.reason}", err=True)
    summary = f"published {counts[PUBLISHED]} event(s) to exchange {settings.events_exchange!r}"
    problems = [f"{counts[fate]} {fate}" for fate in (UNROUTABLE, REFUSED) if counts[fate]]
    if problems:
        raise click.ClickException(f"{summary}; {', '.join(problems)} (lines above)")
    click.echo(summary)


def register(group: click.Group) -> None:
    group.add_command(publish)
