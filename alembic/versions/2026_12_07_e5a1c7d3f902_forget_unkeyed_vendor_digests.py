"""Forget the unkeyed vendor digests

Revision ID: e5a1c7d3f902
Revises: 3b9e6f2d0c41
Create Date: 2026-12-07 02:00:00

Rules for every migration here:
- it must work with the code that is running now (add first, remove in a later release);
- keep locks short: no table rewrite of a big table in one step, create indexes
  CONCURRENTLY on PostgreSQL in a migration of their own;
- a downgrade undoes exactly what the upgrade did.

Release 0.2 stored a plain SHA-256 of each vendor configuration it pushed, `apiHeaders` values
included, so anyone who could read `vendor_configs` could confirm a guessed credential offline.
The digests are now keyed (RECON_VENDOR_DIGEST_KEY); the old ones are emptied so that none stays
in the table. The only cost: the next `recon vendor push` sends every configuration once more
(it would anyway, since a keyed digest never equals an unkeyed one). The downgrade cannot bring
the old digests back, and need not: an empty digest only means "send again".
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e5a1c7d3f902"
down_revision: str | None = "3b9e6f2d0c41"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(sa.text("UPDATE vendor_configs SET content_sha256 = ''"))


def downgrade() -> None:
    pass
