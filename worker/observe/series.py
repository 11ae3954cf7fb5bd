"""The metric objects: created once per process, on first use, never at import (``metrics.py``
says why); each with its name, help text and labels."""

from __future__ import annotations

import threading

#: Seconds; the platform answers in tens of milliseconds, a time-out takes 10 s.
CALL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


class Series:
    """Every counter and histogram the worker keeps, in a registry of its own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        # Not the library's global registry: in a worker the values live in the multiprocess
        # directory and are read back from there; this registry serves processes that are not.
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.outcomes = Counter(
            "recon_outcomes",
            "Outcome rows committed, by kind, status and platform code.",
            ("kind", "status", "code"),
            registry=r,
        )
        self.calls = Counter(
            "recon_platform_calls",
            "Calls to the loyalty platform, by endpoint, HTTP status class, code and result.",
            ("endpoint", "http_class", "code", "result"),
            registry=r,
        )
        self.call_seconds = Histogram(
            "recon_platform_call_seconds",
            "Time from sending a call to the platform to its answer (or failure).",
            ("endpoint",),
            buckets=CALL_BUCKETS,
            registry=r,
        )
        self.throttled = Counter(
            "recon_platform_throttled",
            "HTTP 429 answers: the platform throttled us.",
            ("endpoint",),
            registry=r,
        )
        self.customer_busy = Counter(
            "recon_platform_customer_busy",
            "Code 521 answers: another request for the same customer was running.",
            ("endpoint",),
            registry=r,
        )
        self.slots = Counter(
            "recon_ratelimit_slots",
            "Slots of the shared request budget taken.",
            ("work",),
            registry=r,
        )
        self.waits = Histogram(
            "recon_ratelimit_wait_seconds",
            "Waits in place for the shared request budget.",
            ("work",),
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.deferrals = Counter(
            "recon_ratelimit_deferrals",
            "Tasks handed back to the queue because the budget was spent for too long.",
            ("work",),
            registry=r,
        )
        self.intake = Counter(
            "recon_intake_messages",
            "Messages taken off the events queue, by fate.",
            ("fate",),
            registry=r,
        )
        self.paused_probes = Counter(
            "recon_intake_paused_probes",
            "Probes by a paused intake that found the database still unavailable.",
            registry=r,
        )
        self.swept = Counter(
            "recon_sweeper_reenqueued",
            "Stuck work the sweeper enqueued again.",
            ("work",),
            registry=r,
        )
        self.redriven = Counter(
            "recon_backfill_redriven",
            "Redemptions the backfill re-drove, by kind.",
            ("kind",),
            registry=r,
        )
        self.db_round_trips = Counter(
            "recon_db_round_trips",
            "Database round trips by role (intake, tasks) and trip (statement, begin, commit, "
            "rollback, ping).",
            ("role", "trip"),
            registry=r,
        )
        self.backfill_runs = Counter(
            "recon_backfill_runs", "Nightly backfill runs, by result.", ("result",), registry=r
        )
        # The newest run of any pool process of this worker, living or dead ("max").
        self.backfill_last_run = Gauge(
            "recon_backfill_last_run_timestamp_seconds",
            "When the nightly backfill last finished, by result (Unix time).",
            ("result",),
            multiprocess_mode="max",
            registry=r,
        )


_lock = threading.Lock()
_instance: Series | None = None


def series() -> Series:
    """This process's metric objects, created on first use."""
    global _instance
    if _instance is None:
        with _lock:  # two threads registering the same metric twice would raise
            if _instance is None:
                _instance = Series()
    return _instance
