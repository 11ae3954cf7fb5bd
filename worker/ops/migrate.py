"""Run Alembic programmatically, so `recon migrate` works from any directory.

The migration scripts live in the repository's ``alembic/`` folder, which the wheel ships as the
package ``recon_migrations`` (see setup.py): a package named ``alembic`` would shadow the Alembic
library. An installed product finds them through that package; a checkout without an install
falls back to the folder itself. The settings that ``alembic.ini`` holds for Alembic's own
command line are set here in code, so no ini file has to travel.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config

from models.session import build_engine, normalise_url

CHECKOUT_SCRIPTS = Path(__file__).resolve().parent.parent / "alembic"
FILE_TEMPLATE = "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s"


def script_location() -> Path:
    """The folder holding env.py and versions/ (installed package first, then the checkout)."""
    spec = importlib.util.find_spec("recon_migrations")
    # The package has no __init__.py (the repository folder must not become an `alembic`
    # package), so it is a namespace package: its folder is its search location.
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / "env.py").is_file():
            return Path(folder)
    if (CHECKOUT_SCRIPTS / "env.py").is_file():
        return CHECKOUT_SCRIPTS
    raise RuntimeError(
        "the migration scripts are missing: neither the recon_migrations package nor an "
        "alembic/ folder next to the worker package holds env.py (a broken install?)"
    )


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.set_main_option("file_template", FILE_TEMPLATE)
    config.set_main_option("path_separator", "os")
    config.attributes["database_url"] = normalise_url(database_url)
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


@dataclass(frozen=True)
class Verdict:
    """What `recon migrate` says about the service role: a problem (exit 1) or a note."""

    problem: str | None = None
    note: str | None = None


def settle_service_role(database_url: str, *, role: str, grant: bool) -> Verdict:
    """Grant the service role its privileges (unless ``grant`` is false), then check them.

    Runs as the user of ``database_url``: the migration role, which owns the tables.
    """
    from sqlalchemy import text

    from worker.ops import roles

    engine = build_engine(database_url)
    try:
        if engine.dialect.name != "postgresql":
            return Verdict()  # SQLite has no roles: its triggers are the whole protection
        if not role:
            unset = "RECON_DATABASE_SERVICE_ROLE is not set"
            if not grant:
                return Verdict(problem=f"{unset}: there is no service role to check")
            return Verdict(
                note=f"note: {unset}, so no role was granted anything: the service must run as "
                'a role that does not own the tables (README, "Database roles")'
            )
        with engine.begin() as connection:
            me = connection.execute(text("SELECT current_user")).scalar_one()
            said = roles.problems(connection=connection, role=role)
            exists = not (said and said[0].startswith("does not exist"))
            if grant and exists and role != me:
                roles.grant(connection=connection, role=role)
                said = roles.problems(connection=connection, role=role)
        if said:
            return Verdict(problem=f"the service role {role} " + "; ".join(said))
        return Verdict()
    finally:
        engine.dispose()
