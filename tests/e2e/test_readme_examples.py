"""The README is true for a newcomer: after `recon demo`, every example runs as written.

`recon demo` and the examples run from the installed product (the wheel under `make test`), in
an empty directory, exactly as a newcomer types them after `make demo`.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests import shipped

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()
DEMO_DIR = "recon-demo"


def demo_examples() -> list[str]:
    section = README.split("Examples, each runnable as written after `make demo`", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block, "the README's example block is missing"
    return [line for line in block.group(1).splitlines() if line.strip()]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("newcomer")
    result = subprocess.run(
        # A generous --timeout: a shared CI machine may be slower than a laptop.
        [shipped.RECON, "demo", "--timeout", "600"],
        cwd=where,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all items reached an outcome" in result.stdout
    # Everything the demo leaves is in one folder (ignored by git): its database, kept for the
    # examples, and its log.
    assert sorted(p.name for p in where.iterdir()) == ["recon-demo"]
    assert {"recon.sqlite3", "demo.log"} <= {p.name for p in (where / DEMO_DIR).iterdir()}
    return where


def _env() -> dict[str, str]:
    env = shipped.product_env({"PATH": f"{shipped.BIN}{os.pathsep}{os.environ['PATH']}"})
    # A newcomer has none of these set: the examples read the demo's default database.
    for name in list(env):
        if name.startswith(("RECON_", "LOYALTY_")) and not name.startswith("RECON_TEST"):
            del env[name]
    return env


def test_the_readme_has_examples_for_every_audit_command():
    commands = {line.split()[2] for line in demo_examples() if line.startswith("recon audit ")}
    expected = {"bill", "redemption", "order", "customer", "summary", "failures", "unknown"}
    assert expected | {"unmatched", "export"} <= commands


@pytest.mark.parametrize("line", demo_examples())
def test_each_example_runs_as_written_after_the_demo(demo_dir, line):
    result = subprocess.run(
        ["/bin/sh", "-c", line], cwd=demo_dir, env=_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() or "outcomes.jsonl" in line
    # What an example writes goes into the demo's folder too.
    assert sorted(p.name for p in demo_dir.iterdir()) == [DEMO_DIR]
    # The lookups name a bill, order, redemption and customer of the demo: they find rows.
    if re.match(r"recon audit (bill|redemption|order|customer) ", line):
        assert "No outcomes" not in result.stdout
        assert "succeeded" in result.stdout or "failed" in result.stdout


def test_a_command_on_a_missing_database_fails_in_one_line_and_leaves_no_file(tmp_path):
    result = subprocess.run(
        [shipped.RECON, "audit", "summary"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "recon.sqlite3 does not exist" in result.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "name", ["recon.sqlite3", "recon.sqlite3-wal", "demo.log", "outcomes.jsonl"]
)
def test_git_ignores_what_the_demo_and_the_examples_leave(name):
    ignored = subprocess.run(
        ["git", "check-ignore", "--no-index", "-q", f"{DEMO_DIR}/{name}"], cwd=ROOT
    )
    assert ignored.returncode == 0


def test_make_demo_installs_the_product_lock_only_and_make_test_the_tools_too():
    def planned(target: str) -> str:
        # -n: print what would run; -B: as on a fresh clone, whatever is installed here.
        return subprocess.run(
            ["make", "-n", "-B", target], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout

    demo = planned("demo")
    assert "--require-hashes -r requirements.lock" in demo
    assert "requirements-dev.lock" not in demo
    assert "requirements-dev.lock" in planned("install")
