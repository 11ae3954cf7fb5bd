"""Reading the settings: from the environment, or from the variables a caller gives, and saying
in one line what is wrong with them (never the value: it may be a password)."""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any, TypeVar

from pydantic import ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


#: The variables ``load_settings`` was given, while it reads them (None: the process environment).
given_variables: ContextVar[Mapping[str, str] | None] = ContextVar(
    "recon_settings_given", default=None
)

T = TypeVar("T", bound=BaseSettings)


class GivenVariables(EnvSettingsSource):
    """The environment source, reading the variables ``load_settings`` was given instead of the
    process's own (the demo's embedded defaults, the tests' private configurations)."""

    def __init__(self, settings_cls: type[BaseSettings], variables: Mapping[str, str]) -> None:
        self._variables = variables
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name: value for name, value in self._variables.items() if value != ""}


def build(cls: type[T], values: dict[str, Any], *, variables: Mapping[str, str] | None) -> T:
    """``cls`` from ``values`` and ``variables`` (None: the process environment), checked."""
    token = given_variables.set(variables)
    try:
        return cls(**values)
    except ValidationError as exc:
        # `from None`: pydantic's own text quotes the input, which may be a password.
        raise SettingsError(_describe(cls, exc)) from None
    finally:
        given_variables.reset(token)


def _describe(cls: type[BaseSettings], exc: ValidationError) -> str:
    aliases = {name: field.alias for name, field in cls.model_fields.items()}
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        where = str(error["loc"][0]) if error["loc"] else "?"
        problems.append(
            f"{aliases.get(where) or where}: {error['msg'].removeprefix('Value error, ')}"
        )
    return "invalid configuration: " + "; ".join(problems)
