"""The Celery app: queues, at-least-once settings, schedules, logging and process signals.

The app object exists at import (tasks register on it) but holds no configuration and opens no
connection until ``configure(settings)`` is called by the command that runs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from celery import Celery, signals
from celery.schedules import crontab

from worker.logging import configure_logging, is_configured
from worker.queues import DEAD_QUEUE, TASK_EXCHANGE, TASK_QUEUE, task_queue
from worker.settings import Settings, SettingsError

app = Celery("recon", include=["worker.tasks"])


def task_queue_names() -> list[str]:
    """Every queue the worker's pool consumes (the intake's events queue is not one of them)."""
    return [TASK_QUEUE]


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
    app.conf.update(
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
        worker_send_task_events=False,
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
        app.conf.broker_transport_options = {"polling_interval": 0.01}
    from worker.intake.consumer import IntakeConsumer

    if IntakeConsumer not in app.steps["consumer"]:
        app.steps["consumer"].add(IntakeConsumer)
    return app


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
    argv = [
        "worker",
        "--queues",
        TASK_QUEUE,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        settings.log_level,
        "--without-gossip",
        "--without-mingle",
    ]
    if hostname:
        argv += ["--hostname", hostname]
    app.worker_main([*argv, *extra])


def run_beat(settings: Settings, *, extra: Sequence[str] = ()) -> None:
    configure(settings)
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
    from worker import resources

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
