"""`recon declare`: create the broker topology ahead of the workers."""

from __future__ import annotations

import click

from worker.settings import load_settings


@click.command()
def declare() -> None:
    """Declare every exchange and queue on RECON_BROKER_URL (dead letters first).

    The worker declares the same at start; run this where topology is created ahead of
    deployment, or to make sure nothing dead-lettered can be dropped for want of a queue.
    """
    from kombu import Connection

    from worker.intake.consumer import events_queue_for
    from worker.queues import DEAD_EXCHANGE, DEAD_QUEUE, declare_topology, task_queue_names

    settings = load_settings()
    with Connection(settings.broker_url, connect_timeout=10) as connection:
        connection.ensure_connection(max_retries=3)
        declare_topology(
            connection, events=events_queue_for(settings), task_queue_names=task_queue_names()
        )
    click.echo(
        f"declared exchange {settings.events_exchange} -> queue {settings.events_queue}, "
        f"task queues, and dead letters {DEAD_EXCHANGE.name} -> {DEAD_QUEUE.name}"
    )


def register(group: click.Group) -> None:
    group.add_command(declare)
