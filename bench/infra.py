"""The benchmark's moving parts: a throw-away database and vhost, the sandbox and the workers.

Everything started here is stopped by the same object, by process id (or the process group of a
process we started), with a bounded wait, even when the run fails or is interrupted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests
from kombu import Connection

from bench import round_trips
from tests import services
from worker.ops import migrate

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
#: RECON_BENCH_RECON runs another build's workers under this benchmark (a before/after).
RECON = os.environ.get("RECON_BENCH_RECON") or str(Path(PYTHON).with_name("recon"))
USERNAME, PASSWORD = "store.server", "server123"
TASK_QUEUE, EVENTS_QUEUE, EVENTS_EXCHANGE = "recon.reconcile", "recon.events", "orders"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(what: str, check: Callable[[], bool], timeout: float, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _stop_tree(proc: subprocess.Popen[bytes], grace: float, *, signal_first: bool = True) -> None:
    """SIGTERM ``proc``, then after ``grace`` SIGKILL it and every child it had (by pid; psutil
    checks each one's start time, so a reused pid is never hit)."""
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        family = []
    if signal_first and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    if proc.poll() is None:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
    for child in family:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(family, timeout=5)


# --------------------------------------------------------------------------- database + vhost


@dataclass
class Backend:
    """One PostgreSQL database and one RabbitMQ vhost, migrated, dropped on close."""

    database_url: str = ""
    broker_url: str = ""
    vhost: str = ""

    @classmethod
    def create(cls, prefix: str) -> Backend:
        backend = cls()
        try:
            backend.database_url = services.create_database(prefix)
            migrate.upgrade(backend.database_url)
            backend.broker_url, backend.vhost = services.create_vhost(prefix)
        except BaseException:
            backend.close()
            raise
        return backend

    def close(self) -> None:
        if self.vhost:
            with contextlib.suppress(Exception):
                services.delete_vhost(self.vhost)
            self.vhost = ""
        if self.database_url:
            with contextlib.suppress(Exception):
                services.drop_database(self.database_url)
            self.database_url = ""

    def queue_state(self, name: str) -> tuple[int, int] | None:
        """(messages ready, consumers) of a queue, or None when it does not exist yet."""
        try:
            with Connection(self.broker_url, connect_timeout=5) as conn:
                channel = conn.channel()
                try:
                    ok = channel.queue_declare(queue=name, passive=True)
                    return int(ok.message_count), int(ok.consumer_count)
                finally:
                    with contextlib.suppress(Exception):
                        channel.close()
        except Exception:
            return None


# --------------------------------------------------------------------------- sandbox


class SandboxProcess:
    """``python -m sandbox`` in its own process, so its CPU is not the benchmark's."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = requests.Session()
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "sandbox", "--port", str(self.port), "--rate-limit", "0"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=None,  # a sandbox bug prints its traceback here
            start_new_session=True,
        )
        try:
            wait_until("the sandbox to listen", self._up, timeout=20)
        except BaseException:
            self.stop()
            raise

    def _up(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"the sandbox exited with {self.proc.returncode}")
        try:
            return self.http.get(f"{self.url}/_admin/config", timeout=1).ok
        except requests.RequestException:
            return False

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        answer = self.http.request(method, f"{self.url}/_admin/{path}", json=body, timeout=30)
        answer.raise_for_status()
        return answer.json()

    def reset(self, rate_limit_per_minute: int = 0) -> None:
        self.admin("POST", "config", {"rate_limit_per_minute": rate_limit_per_minute})
        self.admin("POST", "reset")

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.admin("GET", "stats")
        return stats

    def cpu_seconds(self) -> float:
        try:
            times = psutil.Process(self.proc.pid).cpu_times()
            return float(times.user + times.system)
        except psutil.Error:
            return 0.0

    def stop(self) -> None:
        self.http.close()
        _stop_tree(self.proc, grace=5)


# --------------------------------------------------------------------------- workers


@dataclass
class MemorySampler:
    """Peak RSS of every process of every worker (main and pool children), sampled."""

    roots: list[int]
    every: float = 0.25
    peaks: dict[int, int] = field(default_factory=dict)
    firsts: dict[int, int] = field(default_factory=dict)
    lasts: dict[int, int] = field(default_factory=dict)
    roles: dict[int, str] = field(default_factory=dict)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def sample(self) -> None:
        for index, root in enumerate(self.roots):
            try:
                parent = psutil.Process(root)
                family = [(parent, f"worker{index + 1}/main")]
                family += [
                    (child, f"worker{index + 1}/pool") for child in parent.children(recursive=True)
                ]
            except psutil.Error:
                continue
            for proc, role in family:
                try:
                    rss = proc.memory_info().rss
                except psutil.Error:
                    continue
                self.roles.setdefault(proc.pid, role)
                self.firsts.setdefault(proc.pid, rss)
                self.lasts[proc.pid] = rss
                self.peaks[proc.pid] = max(self.peaks.get(proc.pid, 0), rss)
        self.samples += 1

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sample()

    def report(self) -> list[dict[str, Any]]:
        rows = [
            {
                "pid": pid,
                "role": self.roles[pid],
                "peak_rss_mb": round(rss / 2**20, 1),
                "first_rss_mb": round(self.firsts[pid] / 2**20, 1),
                "last_rss_mb": round(self.lasts[pid] / 2**20, 1),
            }
            for pid, rss in self.peaks.items()
        ]
        return sorted(rows, key=lambda row: (row["role"], row["pid"]))


class Workers:
    """``recon worker`` processes, each in its own process group."""

    def __init__(
        self,
        backend: Backend,
        sandbox: SandboxProcess,
        *,
        count: int,
        concurrency: int,
        rate_limit_per_minute: int,
        name: str,
        log_dir: Path,
    ) -> None:
        self.backend = backend
        self.name = name
        self.count = count
        self.concurrency = concurrency
        env = dict(os.environ)
        env.update(
            RECON_DATABASE_URL=backend.database_url,
            RECON_BROKER_URL=backend.broker_url,
            LOYALTY_API_URL=sandbox.url,
            LOYALTY_API_USERNAME=USERNAME,
            LOYALTY_API_PASSWORD=PASSWORD,
            LOYALTY_RATE_LIMIT_PER_MINUTE=str(rate_limit_per_minute),
            RECON_LOG_LEVEL=os.environ.get("RECON_BENCH_LOG_LEVEL", "WARNING"),
            # Metrics served (any free port) so each worker counts its database round trips in
            # files the benchmark reads (bench/round_trips.py).
            RECON_METRICS_PORT="0",
            RECON_METRICS_DIR=str(round_trips.directory(name)),
            # The sweeper and backfill run only under `recon beat`, which the benchmark does not
            # start; nothing but the intake and the reconcile tasks runs.
        )
        log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        try:
            for number in range(1, count + 1):
                log = log_dir / f"{name}-worker{number}.log"
                self.logs.append(log)
                with log.open("wb") as out:
                    self.procs.append(
                        subprocess.Popen(
                            [
                                RECON,
                                "worker",
                                "-c",
                                str(concurrency),
                                "-n",
                                f"{name}{number}@%h",
                            ],
                            cwd=ROOT,
                            env=env,
                            stdout=out,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    )
            self.memory = MemorySampler([p.pid for p in self.procs])
            self.memory.start()
            wait_until("the workers to consume", self._ready, timeout=60, every=0.5)
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"a worker exited with {proc.returncode}:\n{tail}")
        events = self.backend.queue_state(EVENTS_QUEUE)
        tasks = self.backend.queue_state(TASK_QUEUE)
        return (
            events is not None
            and tasks is not None
            and events[1] >= self.count
            and tasks[1] >= self.count
        )

    def pids(self) -> Iterator[int]:
        for proc in self.procs:
            yield proc.pid
            with contextlib.suppress(psutil.Error):
                yield from (c.pid for c in psutil.Process(proc.pid).children(recursive=True))

    def cpu_seconds(self) -> float:
        return sum(self.cpu_by_role().values())

    def cpu_by_role(self) -> dict[str, float]:
        """CPU seconds so far of the main processes together and of the pool processes."""
        totals = {"main": 0.0, "pool": 0.0}
        for proc in self.procs:
            with contextlib.suppress(psutil.Error):
                parent = psutil.Process(proc.pid)
                times = parent.cpu_times()
                totals["main"] += times.user + times.system
                for child in parent.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        times = child.cpu_times()
                        totals["pool"] += times.user + times.system
        return totals

    def alive(self) -> bool:
        return all(proc.poll() is None for proc in self.procs)

    def stop(self) -> None:
        memory = getattr(self, "memory", None)
        if memory is not None:
            memory.stop()
        # Warm shutdown first (SIGTERM: finish the task in hand), then anything left is killed.
        families = []
        for proc in self.procs:
            with contextlib.suppress(psutil.Error):
                families.append(psutil.Process(proc.pid).children(recursive=True))
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs:
            _stop_tree(proc, grace=max(0.1, deadline - time.monotonic()), signal_first=False)
        for family in families:
            for child in family:
                with contextlib.suppress(psutil.Error):
                    child.kill()
            psutil.wait_procs(family, timeout=5)


def system_cpu_seconds() -> dict[str, float]:
    """Busy CPU seconds of the whole machine so far (all cores), for utilisation over a span."""
    times = psutil.cpu_times()
    busy = times.user + times.system + getattr(times, "nice", 0.0)
    busy += getattr(times, "irq", 0.0) + getattr(times, "softirq", 0.0)
    return {"busy": busy, "idle": times.idle + getattr(times, "iowait", 0.0)}


ProgramCpu = dict[tuple[int, float], tuple[str, float]]


def cpu_by_program(exclude: set[int] | None = None) -> ProgramCpu:
    """A snapshot: (pid, start time) -> (program, CPU seconds so far), for PostgreSQL, RabbitMQ,
    this benchmark and everything else on the host (other users of the machine included);
    ``exclude`` pids are left out (they are counted apart)."""
    snapshot: ProgramCpu = {}
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "name", "cpu_times", "create_time"]):
        info = proc.info
        times = info.get("cpu_times")
        if times is None or (exclude and info["pid"] in exclude):
            continue
        name = info.get("name") or ""
        if name.startswith("postgres"):
            group = "postgres"
        elif name.startswith(("beam", "erl", "epmd", "inet_gethost")):
            group = "rabbitmq"
        elif info["pid"] == me:
            group = "bench"
        else:
            group = "other"
        snapshot[(info["pid"], info.get("create_time") or 0.0)] = (
            group,
            times.user + times.system,
        )
    return snapshot


def cpu_spent(before: ProgramCpu, after: ProgramCpu) -> dict[str, float]:
    """CPU seconds per program between two snapshots (processes that ended in between are
    missed; processes that started count whole)."""
    totals = {"postgres": 0.0, "rabbitmq": 0.0, "bench": 0.0, "other": 0.0}
    for key, (group, seconds) in after.items():
        totals[group] += max(0.0, seconds - before.get(key, (group, 0.0))[1])
    return totals


def install_sigterm_as_interrupt() -> None:
    """So that `kill <bench pid>` cleans up exactly like Ctrl-C does (SIGINT is restored too:
    a shell starts background jobs with it ignored)."""

    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGINT, signal.default_int_handler)
