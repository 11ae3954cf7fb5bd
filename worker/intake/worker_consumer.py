"""The worker's Celery consumer: Celery's own, less one step (``worker_consumer`` in app.py)."""

from __future__ import annotations

from celery.worker.consumer import Consumer as CeleryConsumer


class WorkerConsumer(CeleryConsumer):
    """Celery's consumer without its ``DelayedDelivery`` step (``worker_consumer`` names it).

    That step sets delayed delivery up once per URL of the failover list, each node that does not
    answer retried for about 10 s, at every (re)connection: after a broker node stopped, every
    worker would stand still that long before consuming again. The intake's start declares the
    same (``declare_topology``) through the connection that is up, which is all a cluster needs.
    """

    class Blueprint(CeleryConsumer.Blueprint):
        default_steps = [
            step
            for step in CeleryConsumer.Blueprint.default_steps
            if not step.endswith(":DelayedDelivery")
        ]
