"""Where a `recon worker` or `recon beat` serves /metrics: a Prometheus file_sd target file, and
the lines its start-up banner prints.

With ``RECON_METRICS_PORT=0`` every process on a host picks a free port of its own, so no two
collide and nobody hands out port numbers. The port it got must then be found without reading
logs. Each process writes ``recon-<role>-<pid>.json`` into the metrics directory
(``RECON_METRICS_DIR``), in the format of Prometheus's ``file_sd_configs``:

    [{"targets": ["127.0.0.1:40123"], "labels": {"job": "recon-worker"}}]

A Prometheus on the host points one glob at that directory (``deploy/prometheus/prometheus.yml``)
and sees every worker and beat come and go, whatever port each picked: Prometheus watches the
files. A person reads the same file (or the banner). We chose a file over a well-known port or an
HTTP registry because it needs nothing running to be read, works for any number of processes per
host, and is the form Prometheus already consumes.

The file is removed when the process exits. One left behind by a process that was killed
(SIGKILL, out of memory) keeps naming a dead port, so Prometheus sees ``up == 0`` and the
``ReconWorkerDown`` alert fires, which is what should happen; the next process to start on the
host removes it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: The Prometheus job of each role; the alert rules and the dashboard select on these.
JOBS = {"worker": "recon-worker", "beat": "recon-beat"}
_FILE_NAME = re.compile(r"^recon-(worker|beat)-(\d+)\.json$")


@dataclass(frozen=True)
class Endpoint:
    """What this process serves: its role, address and the target file that announces it."""

    role: str
    host: str
    port: int
    target_file: Path

    @property
    def url(self) -> str:
        return f"http://{self.reachable_host}:{self.port}/metrics"

    @property
    def reachable_host(self) -> str:
        # A wildcard bind is reachable on loopback from the same host (who reads the file).
        if self.host in ("", "0.0.0.0"):
            return "127.0.0.1"
        if self.host == "::":
            return "[::1]"
        return f"[{self.host}]" if ":" in self.host else self.host


_current: Endpoint | None = None


def current() -> Endpoint | None:
    """This process's endpoint, once ``announce`` ran (None when /metrics is not served)."""
    return _current


def directory_for(metrics_dir: str) -> Path:
    return Path(metrics_dir) if metrics_dir else Path(tempfile.gettempdir())


def announce(*, role: str, host: str, port: int, metrics_dir: str) -> Endpoint:
    """Write this process's target file (atomically: Prometheus may read it at any moment)."""
    global _current
    root = directory_for(metrics_dir)
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_target_files(root)
    path = root / f"recon-{role}-{os.getpid()}.json"
    endpoint = Endpoint(role=role, host=host, port=port, target_file=path)
    target = [{"targets": [f"{endpoint.reachable_host}:{port}"], "labels": {"job": JOBS[role]}}]
    with tempfile.NamedTemporaryFile("w", dir=root, prefix=".recon-", delete=False) as out:
        json.dump(target, out)
    Path(out.name).replace(path)
    _remove_on_exit(path)
    _current = endpoint
    return endpoint


def remove_stale_target_files(root: Path) -> list[Path]:
    """Remove target files whose process is gone (another live process's stay)."""
    removed = []
    for path in root.glob("recon-*.json"):
        match = _FILE_NAME.match(path.name)
        if match is None or alive(int(match.group(2))):
            continue
        with contextlib.suppress(FileNotFoundError):  # another process was quicker
            path.unlink()
        removed.append(path)
    return removed


def live_target_files(root: Path) -> list[Path]:
    """The target files in ``root`` whose process still runs."""
    if not root.is_dir():
        return []
    found = []
    for path in sorted(root.glob("recon-*.json")):
        match = _FILE_NAME.match(path.name)
        if match is not None and alive(int(match.group(2))):
            found.append(path)
    return found


def banner_lines() -> list[str]:
    """For the start-up banner: where /metrics is, and the file that says so."""
    if _current is None:
        return []
    return [
        "[metrics]",
        f".> {_current.url}",
        f".> target file: {_current.target_file}",
    ]


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (on this host)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _remove_on_exit(path: Path) -> None:
    owner = os.getpid()

    def remove() -> None:
        # Forked pool children inherit atexit handlers; only the process that wrote it removes it.
        if os.getpid() == owner:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    atexit.register(remove)
