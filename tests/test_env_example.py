"""`.env.example`, the README's configuration table and ``ENV_VARS`` name the same settings."""

from __future__ import annotations

import re
from pathlib import Path

from worker.settings import ENV_VARS, load_settings

ROOT = Path(__file__).parent.parent


def example_lines() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip() and not line.startswith("#")]
    # As a shell (and systemd) reads it: surrounding double quotes are not part of the value.
    return {name: value.removeprefix('"').removesuffix('"') for name, value in pairs}


def readme_table() -> set[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z0-9_]+)` \|", section, re.MULTILINE))


def test_env_example_readme_and_settings_list_the_same_variables():
    assert set(example_lines()) == set(ENV_VARS)
    assert readme_table() == set(ENV_VARS)


def test_env_example_is_a_valid_configuration_of_defaults():
    # Loading it as the environment raises on any malformed value.
    from_example = load_settings(example_lines())
    assert from_example == load_settings({})


def test_log_levels_are_case_insensitive():
    assert load_settings({"RECON_LOG_LEVEL": "debug"}).log_level == "DEBUG"
    assert load_settings({"RECON_LOG_LEVEL": "Warning"}).log_level == "WARNING"


def test_env_example_can_be_sourced_by_a_shell():
    import subprocess

    names = " ".join(f'"${name}"' for name in example_lines())
    script = f"set -a; . ./.env.example; set +a; printf '%s\\n' {names}"
    done = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30
    )
    assert done.stderr == ""
    assert done.stdout.splitlines() == list(example_lines().values())
