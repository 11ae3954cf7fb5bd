"""Settings: environment variables with safe defaults, read by a function (never at import).

``Settings`` is the one declaration: each variable is one ``Field`` with its name (the alias), its
default, its rules and its meaning (its docstring). The README's configuration table and
``.env.example`` are written from it (``make settings-docs``), and a test holds both against it.
A bad value raises ``SettingsError``: one line naming the variable and what is expected, never
the value (it may be a password).

``declaration`` holds the fields, ``loading`` reads them, ``held`` keeps the settings of each
Celery app beside it.
"""

from worker.settings.declaration import (
    DEFAULT_BROKER_URL,
    DEFAULT_DATABASE_URL,
    MAX_RATE_LIMIT_PER_MINUTE,
    MIN_DIGEST_KEY_CHARS,
    Settings,
    load_settings,
)
from worker.settings.held import hold_settings, settings_of
from worker.settings.loading import SettingsError

__all__ = [
    "DEFAULT_BROKER_URL",
    "DEFAULT_DATABASE_URL",
    "MAX_RATE_LIMIT_PER_MINUTE",
    "MIN_DIGEST_KEY_CHARS",
    "Settings",
    "SettingsError",
    "hold_settings",
    "load_settings",
    "settings_of",
]
