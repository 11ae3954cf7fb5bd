"""`make profile`: phase 1 of the benchmark (the pipeline) with py-spy sampling every worker
process from outside (issue 14).

Writes to bench/results/: ``profile.svg`` (a flame graph of every worker process: the main
processes are the intake, the pool processes the tasks), ``profile-raw.txt`` (the collapsed
stacks) and ``profile-top.txt`` (the top frames of the pool processes, by own time and by time
including callees), and prints the top ten. py-spy needs ptrace rights over the workers (root,
or ``kernel.yama.ptrace_scope`` 0).

    .venv/bin/python -m bench.profile --orders 2000
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from bench import infra, pipeline, report

PY_SPY = str(Path(sys.executable).with_name("py-spy"))
#: The root frame py-spy gives each process with --subprocesses: "process 123:"<command line>"".
_PROCESS = re.compile(r"^process (\d+):")
#: The product's own code (absolute paths: py-spy runs with --full-filenames); the CLI's frames
#: hold every task and would fill the list.
ROOMS = (f"{infra.ROOT}/worker/", f"{infra.ROOT}/models/")
_FRAME = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")


def _py_spy(pid: int, fmt: str, out: Path, rate: int) -> subprocess.Popen[bytes]:
    command = [PY_SPY, "record", "--pid", str(pid), "--subprocesses", "--nonblocking"]
    command += ["--full-filenames"]
    command += (["--idle"] if ProfiledWorkers.idle else []) + (
        ["--gil"] if ProfiledWorkers.gil else []
    )
    command += ["--rate", str(rate), "--format", fmt, "--output", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


class ProfiledWorkers(infra.Workers):
    """The benchmark's workers, each sampled by py-spy (raw stacks and a flame graph)."""

    rate = 50
    #: --idle: sample waiting threads too, to see where a task's wall time goes, not only its CPU.
    idle = False
    #: --gil: only threads holding the GIL, the closest py-spy comes to CPU time (psycopg's and
    #: the socket's waits release it; without this flag py-spy counts some of them as busy).
    gil = False
    spies: list[tuple[subprocess.Popen[bytes], Path]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spies = []
        self.pool_pids: set[int] = set()
        for number, proc in enumerate(self.procs, start=1):
            with contextlib.suppress(psutil.Error):
                children = psutil.Process(proc.pid).children(recursive=True)
                self.pool_pids.update(child.pid for child in children)
            for fmt, suffix in (("raw", "txt"), ("flamegraph", "svg")):
                out = report.RESULTS / f"profile-{number}.{suffix}"
                self.spies.append((_py_spy(proc.pid, fmt, out, self.rate), out))

    def stop(self) -> None:
        for spy, _ in self.spies:
            if spy.poll() is None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        for spy, _ in self.spies:
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
        super().stop()


def top_frames(raw: list[Path], pool_pids: set[int], n: int = 10) -> dict[str, list[Any]]:
    """The pool processes' top ``n`` frames by own samples and by samples including callees."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for path in raw:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            frames = stack.split(";")
            # A child's stack starts with its parent's root frame, then its own.
            roots = [i for i, frame in enumerate(frames) if _PROCESS.match(frame)]
            if not count.isdigit() or not roots:
                continue
            match = _PROCESS.match(frames[roots[-1]])
            if match is None or int(match.group(1)) not in pool_pids:
                continue
            samples = int(count)
            total += samples
            frames = frames[roots[-1] + 1 :]
            names = [_short(frame) for frame in frames if not frame.startswith("thread ")]
            if names:
                own[names[-1]] += samples
            # Including callees: the product's own functions (the shared stack above them
            # would fill the list).
            for frame in set(frames):
                if any(room in frame for room in ROOMS) and "/cli/" not in frame:
                    inclusive[_short(frame)] += samples

    def rows(counter: collections.Counter[str]) -> list[Any]:
        return [(name, k, round(100 * k / max(total, 1), 1)) for name, k in counter.most_common(n)]

    return {"samples": [total], "own": rows(own), "inclusive": rows(inclusive)}


def _short(frame: str) -> str:
    """``function (path/to/file.py:12)`` -> ``function (file.py)``: one row per function."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    name, path = match.groups()
    parts = Path(path).parts
    where = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{name} ({where})"


def _write_top(top: dict[str, list[Any]], out: Path) -> str:
    lines = [f"pool processes (the tasks): {top['samples'][0]:,} samples"]
    for title, key in (("own time", "own"), ("including callees", "inclusive")):
        lines.append(f"\ntop frames by {title}:")
        lines += [f"{share:5.1f} %  {k:7,}  {name}" for name, k, share in top[key]]
    text = "\n".join(lines) + "\n"
    out.write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--coupons-per-bill", "-k", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=int, default=50, help="py-spy samples per second")
    parser.add_argument(
        "--idle", action="store_true", help="sample waiting threads too (py-spy --idle)"
    )
    parser.add_argument("--gil", action="store_true", help="only threads holding the GIL")
    args = parser.parse_args(argv)
    if shutil.which(PY_SPY) is None:
        print("py-spy is not installed: `make install` (it is a dev dependency)", file=sys.stderr)
        return 1
    report.RESULTS.mkdir(parents=True, exist_ok=True)
    infra.install_sigterm_as_interrupt()
    ProfiledWorkers.rate = args.rate
    ProfiledWorkers.idle = args.idle
    ProfiledWorkers.gil = args.gil
    spied: list[ProfiledWorkers] = []

    class Recorded(ProfiledWorkers):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            spied.append(self)

    infra.Workers = Recorded  # type: ignore[misc]  # pipeline.run builds its workers from here
    sandbox = infra.SandboxProcess()
    try:
        result = pipeline.run(
            sandbox,
            orders=args.orders,
            coupons_per_bill=args.coupons_per_bill,
            workers=args.workers,
            concurrency=1,
            log_dir=report.RESULTS / "logs",
            timeout=600,
            paced_seconds=0,
            paced_share=0.5,
        )
    finally:
        sandbox.stop()
    workers = spied[0]
    raw = [out for _, out in workers.spies if out.suffix == ".txt" and out.exists()]
    combined = report.RESULTS / "profile-raw.txt"
    combined.write_text("".join(path.read_text(errors="replace") for path in raw))
    svgs = [out for _, out in workers.spies if out.suffix == ".svg" and out.exists()]
    for number, svg in enumerate(svgs, start=1):
        target = report.RESULTS / ("profile.svg" if number == 1 else f"profile-{number}.svg")
        if svg != target:
            svg.replace(target)
    print(f"\n{result['items_per_s']:,.0f} items/s while sampled (py-spy slows the workers)")
    print(_write_top(top_frames(raw, workers.pool_pids), report.RESULTS / "profile-top.txt"))
    graphs = sorted(report.RESULTS.glob("profile*.svg"))
    print("flame graph(s): " + ", ".join(str(path) for path in graphs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
