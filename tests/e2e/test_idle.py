"""Waiting for quiet: the end-to-end tests' one wait watches every queue work can wait in."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


def test_re_driven_work_keeps_the_queues_from_being_idle(workers, clean_db):
    from worker.app import configure
    from worker.reconcile import tasks

    configure(workers.settings)
    tasks.enqueue_redriven("idle-1")  # no worker runs: it stays in recon.redrive

    with pytest.raises(AssertionError, match=r"'recon\.redrive': 1"):
        workers.wait_until_idle(timeout=2)
