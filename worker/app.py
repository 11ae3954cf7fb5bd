"""The Celery app: queues, schedules, logging and process signals.

The app object exists at import (tasks register on it) but opens no connection and reads no
environment at import. A `recon` command applies its settings with ``configure(settings)``; any
other user of the app (``celery -A worker.app inspect ping``, Flower) gets the same
configuration from the ``RECON_*`` environment the first time Celery needs it.

It imports none of the steps: it names the task modules and the intake's consumer step, and
Celery imports them when a worker starts. So every step can register its tasks here without an
import running back up, and what a task promises (at least once, bounded retries) is declared
once, by ``recon_task`` in ``worker/reconcile/tasks.py``.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import structlog
from celery import Celery, signals
from celery.schedules import crontab

from worker.observe import banner, exporter
from worker.observe.logging import configure_logging, is_configured
from worker.queues import (
    DEAD_QUEUE,
    TASK_EXCHANGE,
    TASK_QUEUE,
    header_recursion_limit,
    task_queue,
    task_queue_names,
)
from worker.settings import Settings, SettingsError, hold_settings, load_settings, settings_of

#: Every module that declares tasks.
TASK_MODULES = ["worker.reconcile.tasks", "worker.ops.tasks"]
#: The intake: a consumer step in the worker's main process (``worker/intake/consumer.py``).
INTAKE_STEP = "worker.intake.consumer:IntakeConsumer"
#: Celery's consumer, but delayed delivery is declared by the intake step on the live connection.
WORKER_CONSUMER = "worker.intake.worker_consumer:WorkerConsumer"
#: Task arguments every log line of a task carries, by the name the task's signature gives them.
LOG_CONTEXT = ("order_ref", "request_id")

app = Celery("recon", include=TASK_MODULES)


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
    hold_settings(app, settings)
    app.conf.update(celery_config(settings, embedded=embedded))
    app.steps["consumer"].add(INTAKE_STEP)  # a set: configuring twice adds it once
    return app


def celery_config(settings: Settings, *, embedded: bool = False) -> dict[str, Any]:
    """Celery's configuration for ``settings``: no secret but the broker URL, which Celery itself
    masks wherever it shows its configuration."""
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
        task_default_exchange_type=TASK_EXCHANGE.type,
        task_default_routing_key=TASK_QUEUE,
        task_queues=[
            *(
                task_queue(name, delivery_limit=settings.delivery_limit)
                for name in task_queue_names()
            ),
            DEAD_QUEUE,
        ],
        # Quorum task queues: countdowns wait in the broker's delayed-delivery queues (quorum
        # too), not unacked in a worker, and the worker uses per-consumer prefetch.
        worker_detect_quorum_queues=True,
        broker_native_delayed_delivery_queue_type="quorum",
        worker_consumer=WORKER_CONSUMER,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        # Python rarely gives freed memory back, and in one benchmark run the pool processes grew
        # from 85 to 166 MB (cause not found; bench/README.md). Past the bound a pool process is
        # replaced after its task, which loses nothing (the next task goes to the fresh one).
        worker_max_memory_per_child=settings.worker_max_memory_mb * 1024 or None,
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
    settings = load_settings()
    hold_settings(app, settings)
    return celery_config(settings)


app.add_defaults(_environment_defaults)


def default_node_name() -> str:
    """``recon-<pid>@<host>``: unique per process on a host, so N workers need no flags.

    Celery's own default (``celery@%h``) is the same for every worker on a host, and the second
    one dies on its locked pidbox queue; none of Celery's %h/%n/%i placeholders holds a pid.
    """
    return f"recon-{os.getpid()}@%h"


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
    try:
        level = settings_of(app).log_level
    except SettingsError:
        level = "INFO"  # the worker's start names the bad setting itself
    configure_logging(level)


@signals.worker_init.connect
def _room_for_nested_headers(**_: Any) -> None:
    # The worker's main process reads the broker for the life of the worker, so the room py-amqp
    # needs to decode a publisher's deeply nested headers cannot be given per read as `recon
    # dead` does: without it one message stops the worker (and, restarted, again).
    sys.setrecursionlimit(max(sys.getrecursionlimit(), header_recursion_limit()))


@signals.task_prerun.connect
def _bind_task_context(
    task_id: str | None = None,
    task: Any = None,
    args: Sequence[Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
    **_: Any,
) -> None:
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        task_id=task_id, task=getattr(task, "name", None), **named_arguments(task, args, kwargs)
    )


def named_arguments(
    task: Any, args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None
) -> dict[str, str]:
    """The task's ``LOG_CONTEXT`` arguments, by name: ``order_ref``, ``request_id``."""
    try:
        bound = inspect.signature(task.run).bind_partial(*(args or ()), **(kwargs or {}))
    except (AttributeError, TypeError, ValueError):
        return {}  # not a call of this task's signature: nothing to name
    return {name: str(value) for name, value in bound.arguments.items() if name in LOG_CONTEXT}


@signals.task_postrun.connect
def _clear_task_context(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()
