"""The Celery app: every task declared by the one contract, every task module included, and a
task's log lines carrying what it works on by name."""

from __future__ import annotations

from pathlib import Path

import structlog
from celery import signals

from worker.app import TASK_MODULES, app
from worker.reconcile.tasks import MAX_TASK_RETRIES, ReconTask

ROOT = Path(__file__).parent.parent


def recon_tasks() -> dict[str, ReconTask]:
    app.loader.import_default_modules()
    return {name: task for name, task in app.tasks.items() if name.startswith("recon.")}


def test_every_module_that_declares_tasks_is_included_by_the_app():
    declaring = sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for path in (ROOT / "worker").rglob("*.py")
        if "@recon_task(" in path.read_text()
    )
    assert declaring == sorted(TASK_MODULES)


def test_every_task_keeps_the_one_contract():
    tasks = recon_tasks()
    assert set(tasks) == {
        "recon.reconcile_order",
        "recon.reconcile_orders",
        "recon.redeem_points",
        "recon.sweep",
        "recon.backfill",
    }
    for task in tasks.values():
        assert isinstance(task, ReconTask)
        assert task.reject_on_worker_lost is True
        assert task.max_retries == MAX_TASK_RETRIES
    # At least once where the body is idempotent work; a lost scheduler tick is just skipped.
    acked_late = sorted(name for name, task in tasks.items() if task.acks_late)
    assert acked_late == ["recon.reconcile_order", "recon.reconcile_orders", "recon.redeem_points"]


def test_a_tasks_log_lines_name_the_order_or_the_request_it_works_on():
    tasks = recon_tasks()
    cases = [
        ("recon.reconcile_order", ["o-1"], {"redriven": True}, {"order_ref": "o-1"}),
        ("recon.redeem_points", [], {"request_id": 7}, {"request_id": "7"}),
        ("recon.sweep", [], {}, {}),
    ]
    for name, args, kwargs, named in cases:
        task = tasks[name]
        signals.task_prerun.send(sender=task, task_id="t-1", task=task, args=args, kwargs=kwargs)
        bound = structlog.contextvars.get_contextvars()
        assert bound == {"task_id": "t-1", "task": name, **named}
        signals.task_postrun.send(sender=task, task_id="t-1", task=task)
        assert structlog.contextvars.get_contextvars() == {}
