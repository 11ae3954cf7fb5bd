"""The Celery app: queues, at-least-once settings, schedules, logging and process signals.

The app object exists at import (tasks register on it) but opens no connection and reads no
environment at import. A `recon` command applies its settings with ``configure(settings)``; any
other user of the app (``celery -A worker.app inspect ping``, Flower) gets the same
configuration from the ``RECON_*`` environment the first time Celery needs it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import structlog
from celery import Celery, signals
from celery.schedules import crontab

from worker.observe import banner, exporter
from worker.observe.logging import configure_logging, is_configured
from worker.queues import (
    DEAD_QUEUE,
    REDRIVE_QUEUE,
    TASK_EXCHANGE,
    TASK_QUEUE,
    declare_topology,
    task_queue,
)
from worker.settings import Settings, SettingsError, load_settings

app = Celery("recon", include=["worker.reconcile.tasks"])


def task_queue_names() -> list[str]:
    """Every queue the worker's pool consumes (the intake's events queue is not one of them)."""
    return [TASK_QUEUE, REDRIVE_QUEUE]


def parse_cron(expression: str) -> crontab:
    """Five-field crontab (minute hour day-of-month month day-of-week), in UTC."""
    fields = expression.split()
    if len(fields) != 5:
        raise SettingsError(
            f"RECON_BACKFILL_CRON: expected 5 fields 'minute hour day month weekday', "
            f"got {len(fields)}"
        )
    minute, hour, day_of_month, month_of_year, day_of_week = fields
    try:
        return crontab(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month_of_year,
            day_of_week=day_of_week,
        )
    except ValueError as exc:
        raise SettingsError(f"RECON_BACKFILL_CRON: {exc}") from exc


def configure(settings: Settings, *, embedded: bool = False) -> Celery:
    """Apply the settings to the app; ``embedded`` is the one-process demo."""
    global _configured_by_command
    _configured_by_command = True
    app.conf.update(celery_config(settings, embedded=embedded))
    from worker.intake.consumer import IntakeConsumer

    if IntakeConsumer not in app.steps["consumer"]:
        app.steps["consumer"].add(IntakeConsumer)
    return app


def celery_config(settings: Settings, *, embedded: bool = False) -> dict[str, Any]:
    """Celery's configuration for ``settings``."""
    config: dict[str, Any] = dict(
        broker_url=settings.broker_url,
        # A broker outage of any length is waited out (with back-off), never given up on.
        broker_connection_retry_on_startup=True,
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        broker_connection_timeout=5,
        # Every publish (task enqueues after a commit, dead letters before an ack) is confirmed.
        broker_transport_options={"confirm_publish": True},
        task_default_queue=TASK_QUEUE,
        task_default_exchange=TASK_EXCHANGE.name,
        task_default_routing_key=TASK_QUEUE,
        task_queues=[*(task_queue(name) for name in task_queue_names()), DEAD_QUEUE],
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # At least once: ack after the body ran, requeue if the pool process died under it.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        # Task events let Flower and `celery events` show every task; RECON_TASK_EVENTS=false
        # turns them off (one event message per task state change on the broker).
        worker_send_task_events=settings.task_events,
        task_send_sent_event=settings.task_events,
        enable_utc=True,
        timezone="UTC",
        beat_schedule={
            "sweep-stuck-work": {
                "task": "recon.sweep",
                "schedule": float(settings.sweep_interval_seconds),
            },
            "nightly-backfill": {
                "task": "recon.backfill",
                "schedule": parse_cron(settings.backfill_cron),
            },
        },
        recon_settings=settings,
        recon_embedded=embedded,
    )
    if embedded:
        # The in-memory transport polls; its default of once a second would pace the demo.
        config["broker_transport_options"] = {"polling_interval": 0.01}
    return config


_configured_by_command = False


def _environment_defaults() -> dict[str, Any]:
    # Celery calls this the first time its configuration is read (not at import), and only
    # as defaults: whatever configure(settings) set wins. A bad RECON_* value fails here with
    # the settings' own one-line message.
    if _configured_by_command:
        return {}
    return celery_config(load_settings())


app.add_defaults(_environment_defaults)


def default_node_name() -> str:
    """``recon-<pid>@<host>``: unique per process on a host, so N workers need no flags.

    Celery's own default (``celery@%h``) is the same for every worker on a host, and the second
    one dies on its locked pidbox queue; none of Celery's %h/%n/%i placeholders holds a pid.
    """
    return f"recon-{os.getpid()}@%h"


def declare_all(settings: Settings) -> None:
    """Declare every exchange and queue, dead letters first (``recon declare``; the worker does
    the same at start)."""
    from kombu import Connection

    from worker.intake.consumer import events_queue_for

    with Connection(settings.broker_url, connect_timeout=10) as connection:
        connection.ensure_connection(max_retries=3)
        declare_topology(
            connection, events=events_queue_for(settings), task_queue_names=task_queue_names()
        )


def settings_of(celery_app: Celery) -> Settings:
    settings = celery_app.conf.get("recon_settings")
    if settings is None:
        raise SettingsError("the Celery app was used before configure(settings) was called")
    return settings


def run_worker(
    settings: Settings, *, concurrency: int, hostname: str | None, extra: Sequence[str] = ()
) -> None:
    # Refuse to start without a way to authenticate, rather than fail every task later.
    settings.require_credentials()
    configure(settings)
    exporter.start_for_worker(settings)  # before the pool forks: children inherit its directory
    app.Worker = app.subclass_with_self(banner.MetricsBannerWorker)  # the port in the banner
    argv = [
        "worker",
        "--queues",
        ",".join(task_queue_names()),
        "--concurrency",
        str(concurrency),
        "--loglevel",
        settings.log_level,
        "--without-gossip",
        "--without-mingle",
    ]
    argv += ["--hostname", hostname or default_node_name()]
    app.worker_main([*argv, *extra])


def run_beat(settings: Settings, *, extra: Sequence[str] = ()) -> None:
    configure(settings)
    exporter.start_for_beat(settings)
    app.Beat = app.subclass_with_self(banner.MetricsBannerBeat)
    app.start(["beat", "--loglevel", settings.log_level, *extra])


@signals.setup_logging.connect
def _setup_logging(loglevel: Any = None, **_: Any) -> None:
    # Connecting here stops Celery from installing its own handlers. A process that set up
    # logging itself (the demo writes to a file) keeps what it chose.
    if is_configured():
        return
    settings = app.conf.get("recon_settings")
    configure_logging(settings.log_level if settings else "INFO")


@signals.worker_process_init.connect
def _after_fork(**_: Any) -> None:
    # Pooled database connections and HTTP sessions must not cross a fork.
    from worker.reconcile import resources

    resources.reset_after_fork()


@signals.task_prerun.connect
def _bind_task_context(
    task_id: str | None = None, task: Any = None, args: Any = None, **_: Any
) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(task_id=task_id, task=getattr(task, "name", None))
    if args:
        structlog.contextvars.bind_contextvars(subject=str(args[0]))


@signals.task_postrun.connect
def _clear_task_context(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()
