"""With the database down the intake pauses, and the worker stays responsive: it answers Celery's
control commands, shuts down cleanly on SIGTERM, and loses nothing it held."""

from __future__ import annotations

import signal

import pytest
from celery import Celery
from sqlalchemy import select

from models.events import InboxEvent
from models.session import build_engine, unit_of_work
from tests import services
from tests.factories import events
from tests.workers import wait_for
from worker.ops import migrate

pytestmark = pytest.mark.e2e


def test_a_paused_intake_answers_ping_stops_on_sigterm_and_keeps_its_messages(workers):
    missing = services.create_database("recon_paused")
    services.drop_database(missing)
    worker = workers.start("w1", RECON_DATABASE_URL=missing)
    bodies = [events.body(events.coupon_redeemed(f"pause-{n}", 800 + n)) for n in range(5)]
    workers.publish(*bodies)
    wait_for(lambda: "intake.paused" in workers.log_of("w1"), timeout=60)

    control = Celery("probe", broker=workers.settings.broker_url, set_as_current=False)
    try:
        replies = control.control.ping(destination=["w1@" + _host()], timeout=5.0)
    finally:
        control.close()
    assert replies, "a paused worker must still answer Celery's control commands"

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0  # a clean, warm shutdown, not a kill

    # Nothing was lost: the held messages went back to the queue and are stored on restart.
    services.create_database(name=missing.rsplit("/", 1)[1])
    migrate.upgrade(missing)
    engine = build_engine(missing)
    try:
        workers.start("w2", RECON_DATABASE_URL=missing)

        def stored() -> int:
            with unit_of_work(engine) as session:
                return len(session.scalars(select(InboxEvent.id)).all())

        wait_for(lambda: stored() == len(bodies), timeout=60)
    finally:
        workers.stop()
        engine.dispose()
        services.drop_database(missing)


def _host() -> str:
    import socket

    return socket.gethostname()
