"""What ships: the wheel holds every product file, installs from the lock and runs anywhere."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from tests import shipped

ROOT = Path(__file__).resolve().parents[2]
# Folder in the repository -> package in the wheel (alembic/ must not shadow the library).
PRODUCT_DIRS = {"worker": "worker", "models": "models", "sandbox": "sandbox"}
PRODUCT_DIRS["alembic"] = "recon_migrations"
NOT_SHIPPED = {"__pycache__"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("RECON_TEST_WHEEL", "").strip()
    if given:
        return Path(given)
    # By hand (not under `make test`): build one the way `make wheel` and the image do.
    out = tmp_path_factory.mktemp("dist")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip_wheel, "--wheel-dir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    [built] = out.glob("*.whl")
    return built


def product_files() -> set[str]:
    """Every file the product may read at run time, as its path inside the wheel."""
    files = set()
    for folder, package in PRODUCT_DIRS.items():
        for path in (ROOT / folder).rglob("*"):
            relative = path.relative_to(ROOT / folder)
            if path.is_file() and not NOT_SHIPPED & set(relative.parts) and path.suffix != ".pyc":
                files.add(f"{package}/{relative.as_posix()}")
    return files


def test_every_product_file_is_in_the_wheel(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = product_files()
    # The checks below would pass on an empty product: make sure the walk saw the real tree.
    assert "recon_migrations/env.py" in expected
    assert any(name.startswith("recon_migrations/versions/") for name in expected)
    assert "worker/py.typed" in expected
    missing = sorted(expected - names)
    assert not missing, f"missing from {wheel.name}: {missing}"
    assert not [name for name in names if name.startswith("alembic/")], "would shadow alembic"


def _requirement_name(spec: str) -> str:
    return re.split(r"[\[<>=!~; ]", spec, maxsplit=1)[0].lower().replace("_", "-")


def test_every_runtime_dependency_has_an_upper_bound_and_is_locked_with_hashes():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = (ROOT / "requirements.lock").read_text()
    pinned = {
        m.group(1).lower(): m.group(2)
        for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", lock, re.MULTILINE)
    }
    for spec in project["dependencies"]:
        name = _requirement_name(spec)
        assert "<" in spec, f"{spec}: no upper bound"
        assert name in pinned, f"{name} is not in requirements.lock: run `make lock`"
    # Every pin carries a hash, so pip --require-hashes refuses anything else.
    blocks = re.split(r"\n(?=[A-Za-z0-9])", lock.split("\n", 3)[-1])
    for block in blocks:
        if "==" in block:
            assert "--hash=sha256:" in block, block.splitlines()[0]
    dev_lock = (ROOT / "requirements-dev.lock").read_text()
    for spec in project["optional-dependencies"]["dev"]:
        assert re.search(rf"^{_requirement_name(spec)}==", dev_lock, re.M | re.I), spec


def test_the_installed_wheel_runs_from_any_directory_without_the_checkout(tmp_path):
    if not shipped.VENV:
        # Only a bare `pytest` outside `make test` lacks the installed wheel; CI never may.
        message = "needs the installed wheel: run `make test` (it sets RECON_TEST_VENV)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    where = subprocess.run(
        [shipped.PYTHON, "-c", "import worker, recon_migrations; print(worker.__path__[0])"],
        cwd=tmp_path,
        env=shipped.product_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(where).is_relative_to(Path(shipped.VENV).resolve()) or Path(where).is_relative_to(
        Path(shipped.VENV)
    )
    env = shipped.product_env({"RECON_DATABASE_URL": "sqlite:///fresh.sqlite3"})
    migrated = subprocess.run(
        [shipped.RECON, "migrate"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert migrated.returncode == 0, migrated.stderr
    assert "database is at revision head" in migrated.stdout
    assert (tmp_path / "fresh.sqlite3").stat().st_size > 0


DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_the_image_installs_the_built_wheel_from_the_lock_not_the_source_tree():
    stages = re.split(r"^FROM ", DOCKERFILE, flags=re.MULTILINE)[1:]
    assert len(stages) == 2, "a build stage and a final stage"
    build, final = stages
    assert " AS build" in build.splitlines()[0]
    assert "--require-hashes -r /tmp/requirements-build.lock" in build
    assert "pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels ." in build
    assert final.startswith("python:3.11-slim")
    assert "--require-hashes -r /tmp/requirements.lock" in final
    assert "--no-deps --no-index /tmp/wheels/*.whl" in final
    assert "COPY --from=build /wheels" in final
    # No editable install and no sources in the final image.
    assert " -e " not in DOCKERFILE
    assert "--editable" not in DOCKERFILE
    copies = [line for line in final.splitlines() if line.startswith("COPY")]
    assert all("--from=build" in line or "requirements.lock" in line for line in copies)
    users = re.findall(r"^USER (\S+)", final, re.MULTILINE)
    assert users
    assert users[-1] not in ("root", "0")


def test_every_package_the_image_installs_is_checked_against_a_hash():
    """Every `pip install` reads a lock with --require-hashes, or installs the wheel the build
    stage made, from that folder only; the wheel is built without fetching anything."""
    commands = re.split(r"&&|\bRUN\b", DOCKERFILE.replace("\\\n", " "))
    installs = [c.strip() for c in commands if "pip install" in c or "pip wheel" in c]
    assert len(installs) == 4, installs
    for command in installs:
        if "--require-hashes -r " in command:
            continue
        if "pip wheel" in command:
            assert "--no-deps" in command, command
            assert "--no-build-isolation" in command, command
        else:
            assert "--no-deps --no-index /tmp/wheels/" in command, command


def test_the_build_lock_pins_the_build_system_with_hashes():
    from packaging.requirements import Requirement

    wanted = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    lock = (ROOT / "requirements-build.lock").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", lock, re.MULTILINE))
    for requirement in map(Requirement, wanted):
        assert requirement.name in pins, f"requirements-build.lock lacks {requirement.name}"
        assert pins[requirement.name] in requirement.specifier, requirement
    # Every pin carries a hash (what --require-hashes checks).
    blocks = re.split(r"^(?=[A-Za-z0-9_.-]+==)", lock, flags=re.MULTILINE)[1:]
    assert blocks
    assert all("--hash=sha256:" in block for block in blocks)


def test_the_image_exposes_the_ports_compose_uses_and_has_a_health_check():
    [exposed] = re.findall(r"^EXPOSE (.+)$", DOCKERFILE, re.MULTILINE)
    assert set(exposed.split()) == {"8790", "8780", "9460"}
    [check] = re.findall(r"^\s+CMD (\[.+\])$", DOCKERFILE, re.MULTILINE)
    assert json.loads(check) == ["python", "-m", "worker.observe.health"]
    assert re.search(r"^HEALTHCHECK .*\\$", DOCKERFILE, re.MULTILINE)


def test_the_image_default_command_is_a_real_command():
    [cmd] = re.findall(r"^CMD (.+)$", DOCKERFILE, re.MULTILINE)
    argv = json.loads(cmd)
    assert argv[0] == "recon"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert argv[0] in project["scripts"]
    answer = subprocess.run(
        [shipped.RECON, *argv[1:]], capture_output=True, text=True, env=shipped.product_env()
    )
    assert answer.returncode == 0
    assert "Usage: recon" in answer.stdout


def test_recon_version_is_the_one_pyproject_says_and_the_changelog_has_it():
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    shown = subprocess.run(
        [shipped.RECON, "--version"],
        env=shipped.product_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shown.strip() == f"recon, version {version}"
    headings = re.findall(r"^## (.+)$", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert headings[0].startswith("Unreleased")
    assert any(heading.split()[0] == version for heading in headings[1:]), headings
    # Nowhere else: a second copy of the version would drift.
    for path in (ROOT / "worker").rglob("*.py"):
        assert version not in path.read_text(), path


def test_the_wheel_carries_the_licence(wheel):
    with zipfile.ZipFile(wheel) as archive:
        [metadata] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        assert "License-Expression: MIT" in archive.read(metadata).decode()
        licences = [n for n in archive.namelist() if n.endswith("licenses/LICENSE")]
        assert licences
        assert archive.read(licences[0]) == (ROOT / "LICENSE").read_bytes()
