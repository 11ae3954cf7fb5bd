"""`recon declare`: create the broker topology ahead of the workers, and check the size cap."""

from __future__ import annotations

import click
from kombu import Connection

from worker.intake.broker_cap import CAPPED, TOO_LOW, advice, probe_message_cap
from worker.intake.contract import MAX_BODY_BYTES
from worker.settings import load_settings


@click.command()
def declare() -> None:
    """Declare every exchange and queue on RECON_BROKER_URL (dead letters first), then check
    that the broker refuses messages over the intake's size limit.

    The worker declares the same at start; run this where topology is created ahead of
    deployment, or to make sure nothing dead-lettered can be dropped for want of a queue.
    The size cap is RabbitMQ's max_message_size (rabbitmq.conf), which no client can set:
    without it a warning is printed. Exit status 1 if the cap refuses messages the contract
    accepts.
    """
    from worker.intake.consumer import events_queue_for
    from worker.queues import DEAD_EXCHANGE, DEAD_QUEUE, declare_topology, task_queue_names

    settings = load_settings()
    with Connection(settings.broker_url, connect_timeout=10) as connection:
        connection.ensure_connection(max_retries=3)
        declare_topology(
            connection,
            events=events_queue_for(settings),
            task_queue_names=task_queue_names(),
            delivery_limit=settings.delivery_limit,
        )
    click.echo(
        f"declared exchange {settings.events_exchange} -> queue {settings.events_queue}, "
        f"task queues, and dead letters {DEAD_EXCHANGE.name} -> {DEAD_QUEUE.name}"
    )
    with Connection(settings.broker_url, connect_timeout=10) as connection:
        state = probe_message_cap(connection)
    if state == CAPPED:
        click.echo(f"the broker refuses messages over {MAX_BODY_BYTES:,} bytes (max_message_size)")
    problem = advice(state)
    if problem is None:
        return
    if state == TOO_LOW:
        raise click.ClickException(problem)
    click.echo(f"warning: {problem}", err=True)


def register(group: click.Group) -> None:
    group.add_command(declare)
