"""The budget's demand: the platform calls open work still needs (``open_calls``), counted on
real rows in PostgreSQL and in the embedded SQLite."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from models.session import build_engine
from tests.factories.redemptions import make_redeem_request, make_redemption
from tests.factories.transactions import make_transaction
from worker.reconcile.open_calls import open_calls


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request, clean_db, tmp_path):
    if request.param == "postgresql":
        yield clean_db
        return
    from worker.ops import migrate

    url = f"sqlite:///{tmp_path / 'open.sqlite3'}"
    migrate.upgrade(url)
    sqlite = build_engine(url)
    yield sqlite
    sqlite.dispose()


def _open_work(session: Session) -> None:
    # Bill 1: three coupons of one customer (one call), one of another (one more call), and a
    # points redemption (one call).
    bill = make_transaction(session)
    for _ in range(3):
        make_redemption(session, kind="coupon", transaction_id=bill.id)
    make_redemption(session, kind="coupon", transaction_id=bill.id, customer_value="919800000009")
    make_redemption(session, kind="points", transaction_id=bill.id)
    # Bill 2: a coupon waiting for a retry (one call) and one already done (none).
    other = make_transaction(session)
    make_redemption(session, kind="coupon", transaction_id=other.id, state="retrying")
    make_redemption(session, kind="coupon", transaction_id=other.id, state="succeeded")
    # No bill yet: nothing to send.
    make_redemption(session, kind="coupon")
    make_redemption(session, kind="points")
    # Points to redeem: two to make, one in flight (it has its slot), one failed.
    make_redeem_request(session)
    make_redeem_request(session, state="retrying")
    make_redeem_request(session, state="in_flight")
    make_redeem_request(session, state="failed")


def test_open_calls_counts_one_call_per_coupon_bill_per_points_item_and_per_redeem(engine):
    with Session(engine) as session:
        _open_work(session)
        session.commit()

    with engine.connect() as conn:
        # coupon calls (customer and bill) + points update + redeems
        assert open_calls(conn, cap=100) == 3 + 1 + 2
        # Each kind stops at the cap: the budget only asks whether more than a turn is open.
        assert open_calls(conn, cap=1) == 3
