"""The settings each Celery app runs with, held beside the app and never in its configuration.

Celery's configuration is what `celery inspect conf` and Flower show anyone on the broker, and its
own filter only hides keys it recognises.
"""

from __future__ import annotations

import weakref
from typing import Any

from worker.settings.declaration import Settings
from worker.settings.loading import SettingsError

_held: weakref.WeakKeyDictionary[Any, Settings] = weakref.WeakKeyDictionary()


def hold_settings(celery_app: Any, settings: Settings) -> None:
    """Give ``celery_app`` its settings (``configure``, or the environment's for ``celery -A``)."""
    _held[celery_app] = settings


def settings_of(celery_app: Any) -> Settings:
    """The settings ``celery_app`` runs with: those a ``recon`` command configured it with, else
    (``celery -A worker.app ...``) the ``RECON_*`` environment's, read when Celery first read its
    configuration."""
    settings = _held.get(celery_app)
    if settings is None:
        celery_app.conf.get("broker_url")  # the first read of the configuration holds them
        settings = _held.get(celery_app)
    if settings is None:
        raise SettingsError("the Celery app was used before configure(settings) was called")
    return settings
