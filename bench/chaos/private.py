"""Private PostgreSQL and RabbitMQ servers, started for one phase and stopped by it.

Phases (b) and (c) take a server down. They never touch the machine's shared servers: each
starts its own instance on free ports with its own data directory, and stops only the processes
it started (by pid, checked by psutil, so a reused pid is never hit).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import psycopg
from kombu import Connection

from bench import infra

PG_BIN = Path("/usr/lib/postgresql")


def _as_user(user: str, argv: list[str]) -> list[str]:
    """Servers refuse to run as root: run them as their own system user when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", user, "--", *argv]
    return argv


def _chown(path: Path, user: str) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(user)
        for root, dirs, files in os.walk(path):
            os.chown(root, entry.pw_uid, entry.pw_gid)
            for name in [*dirs, *files]:
                os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def _pg_bin(tool: str) -> str:
    found = sorted(PG_BIN.glob(f"*/bin/{tool}"), key=lambda p: int(p.parts[-3]))
    if found:
        return str(found[-1])
    which = shutil.which(tool)
    if which is None:
        raise RuntimeError(f"{tool} not found (PostgreSQL server binaries are needed)")
    return which


class PrivatePostgres:
    """``initdb`` + ``pg_ctl`` into a temporary directory, on a free port, trust auth."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="recon-chaos-pg-"))
        self.data = self.dir / "data"
        self.port = infra.free_port()
        self.log = self.dir / "postgres.log"
        _chown(self.dir, "postgres")
        subprocess.run(
            _as_user(
                "postgres",
                [
                    _pg_bin("initdb"),
                    "-D",
                    str(self.data),
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ],
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.start()

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _ctl(self, *args: str, timeout: float = 90) -> None:
        subprocess.run(
            _as_user("postgres", [_pg_bin("pg_ctl"), "-D", str(self.data), *args]),
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
        self._ctl("-o", options, "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self) -> None:
        """A fast shutdown: sessions are cut, as in a real restart."""
        self._ctl("-m", "fast", "-w", "-t", "60", "stop")

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def up(self) -> bool:
        try:
            with psycopg.connect(self.admin_url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ctl("-m", "immediate", "-w", "-t", "30", "stop", timeout=40)
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRabbit:
    """A second RabbitMQ node: its own node name, AMQP and distribution ports, data and log
    directories, and an empty plugin list (no management listener to clash with). ``config``
    is added to its rabbitmq.conf (``max_message_size = 262144``, say). ``node`` names it (a
    cluster's members are named by ``bench/chaos/rabbit_cluster.py``); ``start=False`` leaves
    starting (and waiting) to the caller, who may start several at once."""

    def __init__(self, *, config: str = "", node: str | None = None, start: bool = True) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="recon-chaos-mq-"))
        self.port = infra.free_port()
        self.dist_port = infra.free_port()
        self.node = node or f"chaos{uuid.uuid4().hex[:8]}@localhost"
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n{config}\n"
        )
        (self.dir / "rabbitmq-env.conf").write_text("")
        (self.dir / "mnesia").mkdir()
        (self.dir / "log").mkdir()
        _chown(self.dir, "rabbitmq")
        self.env = {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbit.pid"),
        }
        self.broker_url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self.proc: subprocess.Popen[bytes] | None = None
        if start:
            self.start()

    def _server(self) -> str:
        direct = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
        return str(direct) if direct.exists() else "rabbitmq-server"

    def start(self, timeout: float = 120) -> None:
        self.launch()
        infra.wait_until("the private RabbitMQ node", self._ready, timeout=timeout, every=0.5)

    def launch(self) -> None:
        """Start the node's process without waiting for it to take connections."""
        out = (self.dir / "server.out").open("ab")
        self.proc = subprocess.Popen(
            _as_user("rabbitmq", [self._server()]),
            env=self.env,
            cwd=self.dir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            tail = (self.dir / "server.out").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"the private RabbitMQ node exited:\n{tail}")
        return self.up()

    def up(self) -> bool:
        try:
            with Connection(self.broker_url, connect_timeout=2) as conn:
                conn.connect()
            return True
        except Exception:
            return False

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM to the node (a clean shutdown), then SIGKILL whatever of ours is left.
        ``epmd`` is shared with the machine's own node and is never signalled."""
        if self.proc is None:
            return
        try:
            family = [self.proc.pid] + [
                c.pid for c in psutil.Process(self.proc.pid).children(recursive=True)
            ]
        except psutil.Error:
            family = []
        procs = []
        for pid in family:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if not proc.name().startswith("epmd"):
                    procs.append(proc)
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGTERM)
        _, alive = psutil.wait_procs(procs, timeout=timeout)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(alive, timeout=10)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        deadline = time.monotonic() + 10
        while self.up() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.proc = None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)
