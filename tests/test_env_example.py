"""`.env.example` and the README's configuration table are the settings declaration, written out."""

from __future__ import annotations

import re
from pathlib import Path

from tests.settings_docs import (
    ENV_EXAMPLE,
    README,
    env_example,
    readme_section,
    readme_table,
    variables,
)
from worker.settings import load_settings

ROOT = Path(__file__).parent.parent
REGENERATE = "out of step with worker/settings/declaration.py: run `make settings-docs`"


def example_lines() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip() and not line.startswith("#")]
    # As a shell (and systemd) reads it: surrounding double quotes are not part of the value.
    return {name: value.removeprefix('"').removesuffix('"') for name, value in pairs}


def readme_variables() -> set[str]:
    readme = README.read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([A-Z0-9_]+)` \|", section, re.MULTILINE))


def test_env_example_readme_and_settings_list_the_same_variables():
    declared = {variable.name for variable in variables()}
    assert set(example_lines()) == declared
    assert readme_variables() == declared


def test_the_readme_table_is_the_declaration_written_out():
    readme = README.read_text()
    start, end = readme_section(readme)
    assert readme[start:end] == readme_table(), f"README.md's configuration table is {REGENERATE}"


def test_env_example_is_the_declaration_written_out():
    assert ENV_EXAMPLE.read_text() == env_example(), f".env.example is {REGENERATE}"


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
