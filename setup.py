"""Package layout that pyproject.toml alone cannot say.

The repository keeps its migrations in the top-level ``alembic/`` folder (where Alembic's own
tools expect them), but an installed ``alembic`` package would shadow the Alembic library. The
wheel therefore ships that folder as the package ``recon_migrations`` (and its ``versions``
subfolder), found by ``worker/ops/migrate.py``. Every file in it travels: new migrations need no
change here. Everything else is in pyproject.toml.
"""

from setuptools import find_namespace_packages, setup

setup(
    packages=[
        *find_namespace_packages(
            include=["worker", "worker.*", "models", "models.*", "sandbox", "sandbox.*"]
        ),
        "recon_migrations",
        "recon_migrations.versions",
    ],
    package_dir={
        "recon_migrations": "alembic",
        "recon_migrations.versions": "alembic/versions",
    },
)
