"""A private PostgreSQL primary with a streaming standby, for the failover phase (g).

Two clusters in one temporary directory, each on its own free port: the primary (``initdb``),
and a standby cloned from it with ``pg_basebackup -R`` (which writes ``primary_conninfo`` and
``standby.signal``), streaming asynchronously, as most installations run. ``promote`` makes the
standby the primary; ``hold_replication`` pauses the primary's WAL sender, so that the standby
falls behind as one does across a slow or broken link, and ``crash_primary`` kills the primary
outright (what was not sent is lost, as when a machine dies). The machine's shared PostgreSQL
(5432) is never touched: every process here is one we started, stopped through ``pg_ctl`` or by
its pid.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import psycopg

from bench import infra
from bench.chaos.private import _as_user, _chown, _pg_bin
from tests import services
from worker.ops import migrate

USER = "postgres"
#: The database a phase makes on the pair.
DATABASE = "recon_chaos"


class Node:
    """One cluster of the pair: its data directory, port and ``pg_ctl``."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.data = root / name
        self.port = infra.free_port()
        self.log = root / f"{name}.log"
        self.socket_dir = root

    def ctl(self, *args: str, timeout: float = 90) -> None:
        subprocess.run(
            _as_user(USER, [_pg_bin("pg_ctl"), "-D", str(self.data), *args]),
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.socket_dir} -c fsync=off "
            "-c wal_level=replica -c max_wal_senders=5 -c hot_standby=on"
        )
        self.ctl("-o", options, "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """``fast``: sessions cut, the WAL written so far shipped to the standby first;
        ``immediate``: a crash (no shutdown checkpoint, nothing waits for the standby)."""
        self.ctl("-m", mode, "-w", "-t", "60", "stop")

    @property
    def admin_url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/postgres"

    def query(self, sql: str) -> object:
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(sql).fetchone()
            return row[0] if row else None

    def pids(self, marker: str) -> list[psutil.Process]:
        """This cluster's processes whose title holds ``marker`` (``walreceiver``, say)."""
        try:
            postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
            children = psutil.Process(postmaster).children()
        except (OSError, ValueError, psutil.Error):
            return []
        found = []
        for child in children:
            with contextlib.suppress(psutil.Error):
                if marker in " ".join(child.cmdline()):
                    found.append(child)
        return found


class StandbyPair:
    """``primary`` streaming to ``standby``; ``close`` stops both and removes every file."""

    def __init__(self, *, synchronous: bool = False) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="recon-chaos-pgha-"))
        _chown(self.dir, USER)
        self.primary = Node(self.dir, "primary")
        self.standby = Node(self.dir, "standby")
        self._held: list[psutil.Process] = []
        try:
            self._initdb()
            self.primary.start()
            self._clone()
            self.standby.start()
            infra.wait_until("the standby to stream", self.streaming, timeout=60, every=0.2)
            if synchronous:
                self._make_synchronous()
        except BaseException:
            self.close()
            raise

    def _initdb(self) -> None:
        subprocess.run(
            _as_user(
                USER,
                [
                    _pg_bin("initdb"),
                    "-D",
                    str(self.primary.data),
                    "-A",
                    "trust",
                    "-U",
                    USER,
                    "--no-sync",
                    "-E",
                    "UTF8",
                ],
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        # Trust auth on 127.0.0.1 covers replication connections too (initdb's pg_hba.conf).

    def _clone(self) -> None:
        subprocess.run(
            _as_user(
                USER,
                [
                    _pg_bin("pg_basebackup"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.primary.port),
                    "-U",
                    USER,
                    "-D",
                    str(self.standby.data),
                    "-R",
                    "-X",
                    "stream",
                    "--no-sync",
                    "-c",
                    "fast",
                ],
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def _make_synchronous(self) -> None:
        """A commit on the primary returns only once the standby has flushed it to disk
        (``synchronous_commit = on``, the default, with a named synchronous standby)."""
        with psycopg.connect(self.primary.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
            conn.execute("SELECT pg_reload_conf()")
        infra.wait_until(
            "the standby to be synchronous",
            lambda: self.primary.query("SELECT sync_state FROM pg_stat_replication") == "sync",
            timeout=30,
            every=0.2,
        )

    def url(self, database: str) -> str:
        """The product's URL: both hosts, libpq's form, writes only on the primary."""
        return (
            f"postgresql+psycopg://{USER}@127.0.0.1:{self.primary.port},"
            f"127.0.0.1:{self.standby.port}/{database}?target_session_attrs=read-write"
        )

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.primary.admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def streaming(self) -> bool:
        with contextlib.suppress(psycopg.Error):
            return self.primary.query("SELECT count(*) FROM pg_stat_replication") == 1
        return False

    def lag_bytes(self) -> int | None:
        """WAL the primary wrote that the standby has not yet received (None: not streaming)."""
        with contextlib.suppress(psycopg.Error):
            value = self.primary.query(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), flush_lsn) FROM pg_stat_replication"
            )
            return None if value is None else int(str(value))
        return None

    def hold_replication(self) -> int:
        """Pause the primary's WAL sender (SIGSTOP): from now on the standby falls behind, as
        behind a slow or broken link, while the primary goes on committing (asynchronous
        replication does not wait). Pausing the sender, not the receiver: a paused receiver
        would still find everything sent meanwhile in its socket's buffer. Returns how many
        processes were paused."""
        self._held = self.primary.pids("walsender")
        for proc in self._held:
            proc.send_signal(signal.SIGSTOP)
        return len(self._held)

    def release_replication(self) -> None:
        for proc in self._held:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGCONT)
        self._held = []

    def crash_primary(self) -> None:
        """SIGKILL the primary's postmaster and every process of it (a machine that died): what
        its WAL sender had not sent is never sent."""
        try:
            postmaster = psutil.Process(
                int((self.primary.data / "postmaster.pid").read_text().split()[0])
            )
            family = [postmaster, *postmaster.children(recursive=True)]
        except (OSError, ValueError, psutil.Error):
            return
        for proc in family:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        psutil.wait_procs(family, timeout=10)
        self._held = []

    def promote(self, timeout: float = 60) -> float:
        """Promote the standby; returns when it takes writes (monotonic time)."""
        with psycopg.connect(self.standby.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute("SELECT pg_promote(wait => true, wait_seconds => 60)")
        infra.wait_until(
            "the promoted standby to take writes",
            lambda: self.standby.query("SELECT pg_is_in_recovery()") is False,
            timeout=timeout,
            every=0.1,
        )
        return time.monotonic()

    def close(self) -> None:
        self.release_replication()
        for node in (self.standby, self.primary):
            if (node.data / "postmaster.pid").exists():
                with contextlib.suppress(Exception):
                    node.ctl("-m", "immediate", "-w", "-t", "30", "stop", timeout=40)
        shutil.rmtree(self.dir, ignore_errors=True)


def backend(pair: StandbyPair, name: str) -> tuple[str, str, str]:
    database_url = pair.create_database(DATABASE)
    migrate.upgrade(database_url)  # through the host list, as `recon migrate` would
    broker_url, vhost = services.create_vhost(f"recon_chaos_{name}")
    return database_url, broker_url, vhost


def delete_vhost(vhost: str) -> None:
    if not vhost:
        return
    try:
        services.delete_vhost(vhost)
    except Exception as exc:  # cleanup must not hide the phase's result
        print(f"    cleanup: {exc}", flush=True)
