"""Reading the settings: from the environment, or from the variables a caller gives."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from worker.settings.declaration import Settings, SettingsError, _given


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``env`` (default: the process environment)."""
    return build({}, variables=env)


def build(values: dict[str, Any], *, variables: Mapping[str, str] | None) -> Settings:
    token = _given.set(variables)
    try:
        return Settings(**values)
    except ValidationError as exc:
        # `from None`: pydantic's own text quotes the input, which may be a password.
        raise SettingsError(_describe(exc)) from None
    finally:
        _given.reset(token)


def _describe(exc: ValidationError) -> str:
    aliases = {name: field.alias for name, field in Settings.model_fields.items()}
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        where = str(error["loc"][0]) if error["loc"] else "?"
        problems.append(
            f"{aliases.get(where) or where}: {error['msg'].removeprefix('Value error, ')}"
        )
    return "invalid configuration: " + "; ".join(problems)
