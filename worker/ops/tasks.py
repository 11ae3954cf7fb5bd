"""The scheduled tasks (``recon beat``): the sweeper every few minutes, the nightly backfill.

Both only find work and hand it to the re-drive queue; the reconcile tasks do it.
"""

from __future__ import annotations

from worker.observe import metrics
from worker.ops import backfill, sweep
from worker.reconcile.tasks import ReconTask, enqueue, enqueue_redriven, recon_task


# Not acks_late: a tick lost with its worker costs nothing, the next one finds the same work.
@recon_task("recon.sweep", acks_late=False)
def sweep_stuck_work(self: ReconTask) -> dict[str, int]:
    """Re-enqueue work pending for longer than RECON_SWEEP_AFTER_SECONDS."""
    found = sweep.find_stuck_work(self.resources.engine, self.resources.settings)
    enqueue(orders=found.orders, redeem_requests=found.redeem_requests, redriven=True)
    return {"orders": len(found.orders), "redeem_requests": len(found.redeem_requests)}


@recon_task("recon.backfill", acks_late=False)
def nightly_backfill(self: ReconTask) -> dict[str, int]:
    """Re-drive every open redemption that has its bill (the nightly run)."""
    r = self.resources
    try:
        # Hands each order to the re-drive queue rather than holding this process for hours.
        summary = backfill.run_backfill(
            r.engine,
            r.client,
            policy=r.policy,
            options=backfill.Options(),
            hand_off=enqueue_redriven,
        )
    except Exception:
        metrics.backfill_run(succeeded=False)  # the ReconBackfillFailing alert reads this
        raise
    metrics.backfill_run(succeeded=True)
    return summary.as_dict()
