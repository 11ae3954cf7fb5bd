"""Rate limiter: live work is paced while more of it waits than one turn of the ring serves

Revision ID: d6b3e8a1f4c7
Revises: a7d4c2e9b815
Create Date: 2026-12-07 06:10:00.000000

``rate_limits.paced_until``: set when a request deferred for the first time gets a return time
past every slot's next expiry (more waits than a turn of the ring serves); until then live takes are
paced to the limit's average rate, so the ring evens out (issue 14). Nullable and unread by the
previous release, so workers of both can run during an upgrade. Since dfc5274 it is set when a
live request is deferred on a full ring while more calls are open than the ring holds.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d6b3e8a1f4c7"
down_revision: str | None = "a7d4c2e9b815"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rate_limits") as batch:
        batch.add_column(sa.Column("paced_until", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rate_limits") as batch:
        batch.drop_column("paced_until")
