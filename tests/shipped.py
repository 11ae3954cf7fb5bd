"""Which `recon` the end-to-end tests run: the installed wheel under `make test`.

``make test`` builds the wheel, installs it from the lock into a virtualenv of its own and sets
``RECON_TEST_VENV`` to it, so every subprocess (worker, beat, migrate, demo, celery inspect) runs
the product as shipped, not this checkout. Without the variable (a developer running pytest by
hand) the tests run the checkout's own `.venv`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

VENV = os.environ.get("RECON_TEST_VENV", "")
BIN = Path(VENV) / "bin" if VENV else Path(sys.executable).parent
RECON = str(BIN / "recon")
CELERY = str(BIN / "celery")
PYTHON = str(BIN / "python")


def product_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a product subprocess: no PYTHONPATH that could reach the checkout."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(extra or {})
    return env
