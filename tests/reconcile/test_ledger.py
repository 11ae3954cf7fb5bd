"""The ledger writes outcome rows by hand on PostgreSQL: its column list must be the table's."""

from __future__ import annotations

from models.outcomes import Outcome
from worker.reconcile.outcomes import OUTCOME_COLUMNS, Verdict, outcome_values


def test_the_hand_written_insert_names_every_column_an_outcome_row_has():
    values = outcome_values(
        kind="coupon",
        verdict=Verdict("succeeded", 761, "ok"),
        attempt=1,
        exchange=None,
        redemption_id="1",
        order_ref="o-1",
        customer="9190",
        event_id="e-1",
    )
    assert tuple(values) == OUTCOME_COLUMNS
    # A column added to the model and not to the ledger would be left to its default there.
    assert set(OUTCOME_COLUMNS) == {c.name for c in Outcome.__table__.columns} - {"id"}
