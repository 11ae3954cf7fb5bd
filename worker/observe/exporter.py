"""Serving /metrics: a fresh multiprocess directory per worker, and the HTTP server (the gauges it
reads from PostgreSQL on each scrape are ``gauges.py``).

A `recon worker` is one main process (the intake) and a prefork pool whose children run the
tasks. Each writes its counters to files of its own in ``PROMETHEUS_MULTIPROC_DIR``; the main
process sums them when scraped. The directory must be new for each worker instance (several run
on one host, and a restarted worker must not add its predecessor's totals to its own), and it must
be set before ``prometheus_client`` is imported by any process of the worker, which is why
``worker/observe/metrics.py`` imports it lazily and ``start_for_worker`` runs before Celery forks.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog

from worker.observe import discovery, round_trips
from worker.observe.broker_gauges import BrokerGauges
from worker.observe.discovery import alive
from worker.observe.gauges import DatabaseGauges
from worker.settings import Settings, SettingsError

log = structlog.get_logger(__name__)

DIR_PREFIX = "recon-metrics-"
_DIR_NAME = re.compile(rf"^{DIR_PREFIX}(\d+)-")


# --- the multiprocess directory ----------------------------------------------------------------


def fresh_directory(base: str = "") -> Path:
    """A new, empty directory for this worker's metric files, named after its pid; directories
    left by workers that died without cleaning up are removed first."""
    root = Path(base) if base else Path(tempfile.gettempdir())
    try:
        root.mkdir(parents=True, exist_ok=True)
        remove_stale_directories(root)
        return Path(tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{os.getpid()}-", dir=root))
    except OSError as exc:
        raise SettingsError(
            f"RECON_METRICS_DIR: cannot make a metrics directory in {root}: "
            f"{exc.strerror or type(exc).__name__}"
        ) from None


def remove_stale_directories(root: Path) -> list[Path]:
    """Remove our directories whose worker process is gone; another live worker's stay."""
    removed = []
    for path in root.iterdir():
        match = _DIR_NAME.match(path.name)
        if match is None or not path.is_dir() or alive(int(match.group(1))):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def use_directory(path: Path) -> None:
    """Point prometheus_client (in this process and every child forked after) at ``path``."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        # Imported before the directory was known (by some other module): values created from
        # now on must still go to the files. Ours are created lazily, so all of them do.
        values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]


def _remove_on_exit(path: Path) -> None:
    owner = os.getpid()

    def remove() -> None:
        # Forked children inherit atexit handlers; only the worker's main process cleans up.
        if os.getpid() == owner:
            shutil.rmtree(path, ignore_errors=True)

    atexit.register(remove)


def _mark_child_dead(**_: Any) -> None:
    from prometheus_client import multiprocess

    # Counters of a dead child stay (they are history); its live gauges, if any, must go.
    multiprocess.mark_process_dead(os.getpid())


_FILE_PID = re.compile(r"_(\d+)\.db$")


def mark_dead_processes(directory: Path) -> list[int]:
    """``mark_process_dead`` for every process with files here that is gone, including pool
    children killed without a chance to say so (SIGKILL, out of memory)."""
    from prometheus_client import multiprocess

    pids = set()
    for path in directory.glob("*.db"):
        match = _FILE_PID.search(path.name)
        if match is not None:
            pids.add(int(match.group(1)))
    dead = sorted(pid for pid in pids if not alive(pid))
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(directory))
    return dead


class _PoolCollector:
    """The multiprocess collector, after tidying up behind dead processes."""

    def __init__(self, directory: Path) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self._directory = directory
        self._collector = MultiProcessCollector(None, path=str(directory))

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        mark_dead_processes(self._directory)
        return self._collector.collect()


# --- serving -------------------------------------------------------------------------------------


def start_for_worker(settings: Settings) -> Any | None:
    """Serve /metrics for a `recon worker` (main process and pool children), if a port is set."""
    if settings.metrics_port is None:
        return None
    from celery import signals

    directory = fresh_directory(settings.metrics_dir)
    use_directory(directory)
    _remove_on_exit(directory)
    signals.worker_process_shutdown.connect(_mark_child_dead, weak=False)
    # Round trips are counted where they are served (issue 14: the benchmark reads them).
    round_trips.listen()
    signals.worker_process_init.connect(round_trips.in_pool, weak=False)
    signals.task_postrun.connect(lambda **_: round_trips.flush(), weak=False)

    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    registry.register(_PoolCollector(directory))
    _register_gauges(registry, settings)
    return _serve(settings, registry, role="worker", directory=directory)


def start_for_beat(settings: Settings) -> Any | None:
    """Serve the database gauges from `recon beat`, if a port is set (beat counts nothing)."""
    if settings.metrics_port is None:
        return None
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    _register_gauges(registry, settings)
    return _serve(settings, registry, role="beat", directory=None)


def _register_gauges(registry: Any, settings: Settings) -> None:
    registry.register(DatabaseGauges(settings))
    if settings.broker_url.startswith(("amqp", "pyamqp")):
        registry.register(BrokerGauges(settings))


def _serve(settings: Settings, registry: Any, *, role: str, directory: Path | None) -> Any:
    from prometheus_client import start_http_server

    host, port = settings.metrics_host, settings.metrics_port
    assert port is not None
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise SettingsError(
            f"RECON_METRICS_PORT: cannot serve /metrics on {host}:{port}: {reason} "
            "(each recon worker on a host needs a port of its own)"
        ) from None
    endpoint = discovery.announce(
        role=role, host=host, port=server.server_port, metrics_dir=settings.metrics_dir
    )
    log.info(
        "metrics.serving",
        role=role,
        host=host,
        port=server.server_port,
        url=endpoint.url,
        target_file=str(endpoint.target_file),
        directory=str(directory) if directory else None,
    )
    return server
