"""Real `recon worker` processes for end-to-end tests, and an order system publishing to them."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import psutil
from kombu import Connection
from kombu.transport.native_delayed_delivery import (
    MAX_LEVEL,
    declare_native_delayed_delivery_exchanges_and_queues,
    level_name,
)

from tests.shipped import RECON, product_env
from worker.intake.consumer import events_queue_for
from worker.queues import DELAYED_PREFIX, task_queue, task_queue_names
from worker.settings import load_settings
from worker.tools.publishing import publish_bodies


class Workers:
    """Starts workers against one database, vhost and sandbox; stops them all at the end."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = product_env(env)
        self.log_dir = log_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.settings = load_settings(env)

    def start(
        self, name: str = "w1", concurrency: int = 1, **extra_env: str
    ) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [RECON, "worker", "-c", str(concurrency), "-n", f"{name}@%h"],
            env={**self.env, **extra_env},
            # Not the checkout: the installed product must find everything it needs itself.
            cwd=self.log_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def declare(self) -> None:
        """The queue exists before anything is published (the worker declares it too)."""
        with Connection(self.settings.broker_url) as conn:
            events_queue_for(self.settings)(conn.default_channel).declare()

    def publish(self, *bodies: bytes) -> None:
        with Connection(
            self.settings.broker_url, transport_options={"confirm_publish": True}
        ) as conn:
            publish_bodies(conn, self.settings.events_exchange, bodies)

    def work_queues(self) -> list[str]:
        """Every queue work waits in: the events queue and each task queue (live, re-drive)."""
        return [self.settings.events_queue, *task_queue_names()]

    def purge(self) -> None:
        """Empty the queues between tests (declaring them as the worker does, first)."""
        limit = self.settings.delivery_limit
        queues = [
            events_queue_for(self.settings),
            *(task_queue(name, delivery_limit=limit) for name in task_queue_names()),
        ]
        with Connection(self.settings.broker_url) as conn:
            channel = conn.default_channel
            for queue in queues:
                queue(channel).declare()
                channel.queue_purge(queue.name)
            # A countdown an earlier test left waiting in delayed delivery would come back into
            # this test's queues, and keep its wait for quiet from ending until it did.
            declare_native_delayed_delivery_exchanges_and_queues(conn, "quorum")
            for level in range(MAX_LEVEL + 1):
                channel.queue_purge(level_name(level))

    def unfinished(self) -> dict[str, int]:
        """Messages of every work queue not yet done: ready plus unacknowledged.

        The intake acknowledges an event after its rows are committed and its task enqueued; a
        task is acknowledged after it ran, and a retry waits for its countdown in the broker's
        delayed-delivery queues (counted as ``delayed``), so 0 in all means no work is queued,
        running or waiting to run.
        """
        listed = self._listed()
        # rabbitmqctl reads a quorum queue's counts from statistics that trail it by a second or
        # two, so a message just published can be missing there; the queue itself (a passive
        # declare) counts its ready messages at once. The larger of the two misses nothing.
        ready = self._ready(
            name for name in listed if name in self.work_queues() or name.startswith(DELAYED_PREFIX)
        )
        counts = {name: max(count, ready.get(name, 0)) for name, count in listed.items()}
        delayed = sum(n for name, n in counts.items() if name.startswith(DELAYED_PREFIX))
        return {
            **{name: counts.get(name, 0) for name in self.work_queues()},
            "delayed": delayed,
        }

    def _listed(self) -> dict[str, int]:
        """Every queue of the vhost with its messages (ready and unacknowledged), as rabbitmqctl
        counts them."""
        vhost = self.settings.broker_url.rsplit("/", 1)[1] or "/"
        listing = subprocess.run(
            [
                "rabbitmqctl",
                "-q",
                "list_queues",
                "-p",
                vhost,
                "--no-table-headers",
                "name",
                "messages",
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        return {
            name: int(count)
            for name, count in (line.split("\t") for line in listing.splitlines() if "\t" in line)
        }

    def _ready(self, names: Iterable[str]) -> dict[str, int]:
        with Connection(self.settings.broker_url) as conn:
            channel = conn.default_channel
            return {name: channel.queue_declare(name, passive=True).message_count for name in names}

    def wait_until_idle(self, timeout: float = 60.0) -> None:
        """The one wait for quiet: poll until every work queue is empty and no worker holds a
        message, twice in a row; fail naming the queues that were not."""
        deadline = time.monotonic() + timeout
        idle_in_a_row = 0
        while idle_in_a_row < 2:
            busy = {name: count for name, count in self.unfinished().items() if count}
            if busy and time.monotonic() > deadline:
                raise AssertionError(f"work still queued after {timeout} s: {busy}")
            idle_in_a_row = 0 if busy else idle_in_a_row + 1
            time.sleep(0.5)

    def pool_children(self, process: subprocess.Popen[bytes]) -> list[psutil.Process]:
        return psutil.Process(process.pid).children(recursive=True)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self.processes.clear()

    def log_of(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")


def wait_for(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; fail with its last value otherwise."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last value: {value!r})")
