"""`recon declare`: create the broker topology ahead of the workers, and check the size cap."""

from __future__ import annotations

import click
from amqp.exceptions import PreconditionFailed
from kombu import Connection, Queue

from worker.cli.broker import refusal
from worker.intake.broker_cap import CAPPED, TOO_LOW, advice, probe_message_cap
from worker.intake.wire import MAX_BODY_BYTES
from worker.settings import load_settings


@click.command()
@click.option(
    "--upgrade",
    is_flag=True,
    help="Move a vhost from release 0.2's classic queues and direct exchange to quorum queues "
    "and a topic exchange, keeping every message (stop every worker first).",
)
def declare(upgrade: bool) -> None:
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
        if upgrade:
            _upgrade(connection, settings.delivery_limit, events_queue_for(settings))
        try:
            declare_topology(
                connection,
                events=events_queue_for(settings),
                task_queue_names=task_queue_names(),
                delivery_limit=settings.delivery_limit,
            )
        except PreconditionFailed as exc:
            raise click.ClickException(
                f"{refusal(exc, url=settings.broker_url)}: this vhost holds queues declared "
                "otherwise (release 0.2's classic queues?): stop every worker, then run "
                "`recon declare --upgrade`"
            ) from exc
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


def _upgrade(connection: Connection, delivery_limit: int, events: Queue) -> None:
    from worker.ops.upgrade import UpgradeRefused, upgrade_topology
    from worker.queues import task_queue_names

    try:
        moved = upgrade_topology(
            connection,
            events=events,
            task_queue_names=task_queue_names(),
            delivery_limit=delivery_limit,
        )
    except UpgradeRefused as exc:
        raise click.ClickException(str(exc)) from exc
    for entry in moved:
        click.echo(f"{entry.queue}: quorum, {entry.messages} message(s) moved over")


def register(group: click.Group) -> None:
    group.add_command(declare)
