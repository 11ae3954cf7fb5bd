"""The README's configuration table and ``.env.example``, written from the settings declaration.

``make settings-docs`` rewrites both after a change to ``worker/settings/declaration.py``;
``tests/test_env_example.py`` fails while either differs from what this writes.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from worker.settings import Settings

ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
ENV_EXAMPLE = ROOT / ".env.example"
TABLE_HEADER = "| variable | default | meaning |\n|---|---|---|\n"

ENV_EXAMPLE_HEAD = """\
# Every setting of the redemption reconciler, with its default. Copy to `.env`, change what
# differs, and load it into a shell (`set -a; . ./.env; set +a`) or name it as a systemd
# EnvironmentFile. compose.yaml sets its own values and reads from `.env` only passwords and
# tokens: LOYALTY_API_PASSWORD, POSTGRES_PASSWORD, RECON_OWNER_PASSWORD, RECON_SERVICE_PASSWORD,
# RABBITMQ_PASSWORD, RECON_WEB_TOKEN, GRAFANA_ADMIN_PASSWORD and (for its flower profile)
# FLOWER_BASIC_AUTH=user:password. Written from worker/settings/declaration.py by
# `make settings-docs` (README.md, "Configuration", has the same table); tests/test_env_example.py
# keeps them in step.
"""


@dataclass(frozen=True)
class Variable:
    """One setting as the README and ``.env.example`` show it."""

    name: str
    default: str  # as a shell writes it: "" when unset
    description: str


def variables() -> list[Variable]:
    """Every variable with its default and meaning, in the order of the declaration."""
    found = []
    for field in Settings.model_fields.values():
        default = field.default
        if isinstance(default, SecretStr):
            default = default.get_secret_value()
        if isinstance(default, bool):
            default = str(default).lower()
        text = "" if default is None else str(default)
        description = " ".join((field.description or "").split())
        found.append(Variable(str(field.alias), text, description))
    return found


def _shown_default(variable: Variable) -> str:
    return f"`{variable.default}`" if variable.default else "(unset)"


def readme_table() -> str:
    """The markdown table of the README's "Configuration" section."""
    rows = (f"| `{v.name}` | {_shown_default(v)} | {v.description} |" for v in variables())
    return TABLE_HEADER + "\n".join(rows) + "\n"


def _shell_value(value: str) -> str:
    # As a shell (and systemd) reads it: a value with a space must be quoted.
    return f'"{value}"' if " " in value else value


def env_example() -> str:
    """``.env.example``: each variable's meaning as a comment, then its default."""
    blocks = []
    for variable in variables():
        comment = textwrap.wrap(variable.description, width=98)
        lines = [f"# {line}" for line in comment]
        lines.append(f"{variable.name}={_shell_value(variable.default)}")
        blocks.append("\n".join(lines))
    return ENV_EXAMPLE_HEAD + "\n" + "\n".join(blocks) + "\n"


def readme_section(readme: str) -> tuple[int, int]:
    """Where the table stands in the README's "Configuration" section (start, end)."""
    section = readme.index("\n## Configuration\n")
    start = readme.index(TABLE_HEADER, section)
    end = readme.find("\n\n", start)
    return start, len(readme) if end < 0 else end + 1


def write() -> None:
    readme = README.read_text()
    start, end = readme_section(readme)
    README.write_text(readme[:start] + readme_table() + readme[end:])
    ENV_EXAMPLE.write_text(env_example())


if __name__ == "__main__":
    write()
