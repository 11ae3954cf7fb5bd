"""The start-up banners of `recon worker` and `recon beat`, with where /metrics is served.

Celery prints its banner (node, transport, queues) to stdout when a worker or beat starts; the
metrics port chosen with ``RECON_METRICS_PORT=0`` belongs there too, next to what a person reads
first, and in the target file ``worker/observe/discovery.py`` writes for Prometheus.
"""

from __future__ import annotations

from celery.apps.beat import Beat
from celery.apps.worker import Worker

from worker.observe import discovery


class MetricsBannerWorker(Worker):
    def startup_info(self, artlines: bool = True) -> str:
        info: str = super().startup_info(artlines=artlines)
        lines = discovery.banner_lines()
        if not lines:
            return info
        # Celery indents the lines past its ASCII art by 16 columns; ours line up with them.
        pad = " " * 16 if artlines else ""
        return info + "\n" + "".join(f"{pad}{line}\n" for line in lines)


class MetricsBannerBeat(Beat):
    def startup_info(self, service: object) -> str:
        info: str = super().startup_info(service)  # type: ignore[arg-type]
        endpoint = discovery.current()
        if endpoint is None:
            return info
        return (
            f"{info.rstrip()}\n    . metrics -> {endpoint.url}\n"
            f"    . metrics target file -> {endpoint.target_file}\n"
        )
