"""What the worker counts for Prometheus: one small function per event, bounded labels only.

Call sites say what happened (``metrics.intake_message("stored")``); this module turns it into a
counter or a histogram. Every label value passes through a fixed vocabulary, and anything outside
it is counted as ``other``: an order, bill, customer or redemption id can never become a label,
and a platform that invents new codes cannot grow the number of series without bound.

``prometheus_client`` is imported on first use, not at import: it decides at its own import
whether to write values to the multiprocess directory, and ``recon worker`` sets that directory
only once it knows it is the worker (``worker/observe/exporter.py``). Outside a worker (the CLI, the
demo, unit tests) the same calls count in this process's memory.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from sqlalchemy.orm import Session

OTHER = "other"
NONE = "none"

KINDS = frozenset({"coupon", "points", "points_redeem", "vendor"})
STATUSES = frozenset({"succeeded", "failed", "retrying", "gave_up", "unknown", "skipped"})
#: The platform's codes named by its pages and DESIGN.md, the transient ones, and our own local
#: 400 (a field rule without a documented code) and 401 (credentials refused).
CODES = frozenset(
    {
        *(400, 401, 461, 510, 521, 748, 749, 750, 761, 762, 800, 801, 815, 828, 878),
        *(886, 887, 889, 894, 898, 1212, 1219, 1632, 3316, 5016, 8015),
    }
)
#: The ``outcome`` word of the client's call log (``worker/loyalty/errors.py:outcome_of`` and the
#: result types' ``outcome``).
CALL_RESULTS = frozenset(
    {
        "succeeded", "partial", "failed", "answered", "rejected", "transient", "ambiguous",
        "rate_limited", "protocol_error", "unauthorized", "error",
    }
)  # fmt: skip
#: Path prefix -> endpoint label. Vendor paths carry ids, so a path is never a label itself.
ENDPOINTS = (
    ("/v2/coupon/redeem", "coupon_update"),
    ("/v2/points/updateRedemption", "points_update"),
    ("/v1.1/points/redeem", "points_redeem"),
    ("/api_gateway/rewards/core/v1/vendor/redemption/", "vendor_update"),
    ("/v3/oauth/token/generate", "oauth_token"),
)
INTAKE_FATES = frozenset({"stored", "duplicate", "rejected", "dead_lettered", "requeued", "held"})
#: Who spent a rate-limit slot: live work, or work the sweeper or the backfill re-drove.
WORK = frozenset({"live", "redriven"})
SWEPT = frozenset({"order", "redeem_request"})

#: Seconds; the platform answers in tens of milliseconds, a time-out takes 10 s.
CALL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)

_PENDING_OUTCOMES = "recon_metrics_pending_outcomes"


# --- events -----------------------------------------------------------------------------------


def outcome_recorded(session: Session, *, kind: str, status: str, code: int | None) -> None:
    """An outcome row was added to ``session``: counted when its transaction commits, so the
    counter matches the ``outcomes`` table (a rolled-back row never happened)."""
    _listen_to_sessions()
    pending = session.info.setdefault(_PENDING_OUTCOMES, [])
    pending.append((_pick(kind, KINDS), _pick(status, STATUSES), _code(code)))


class Call(Protocol):
    """What ``platform_call`` reads of a call (``worker.loyalty.types.Exchange`` has it)."""

    @property
    def path(self) -> str: ...
    @property
    def http_status(self) -> int | None: ...
    @property
    def elapsed_ms(self) -> float: ...


def platform_call(call: Call, *, code: int | None, result: str) -> None:
    """One call to the platform answered, or failed without an answer (``http_status`` None);
    ``code`` is the platform's code and ``result`` the call log's ``outcome`` word."""
    m = _metrics()
    endpoint = endpoint_of(call.path)
    http_status, elapsed_ms = call.http_status, call.elapsed_ms
    m.calls.labels(
        endpoint, _http_class(http_status), _code(code), _pick(result, CALL_RESULTS)
    ).inc()
    m.call_seconds.labels(endpoint).observe(max(elapsed_ms, 0.0) / 1000.0)
    if http_status == 429:
        m.throttled.labels(endpoint).inc()
    if code == 521:
        m.customer_busy.labels(endpoint).inc()


def ratelimit_slot(work: str = "live") -> None:
    """A slot of the shared request budget was taken."""
    _metrics().slots.labels(_pick(work, WORK)).inc()


def ratelimit_wait(seconds: float, work: str = "live") -> None:
    """A call waited in place for the budget (the histogram's ``_count`` counts the waits)."""
    _metrics().waits.labels(_pick(work, WORK)).observe(max(seconds, 0.0))


def ratelimit_deferral(work: str = "live") -> None:
    """The budget was spent for too long: the task went back to the queue instead of waiting."""
    _metrics().deferrals.labels(_pick(work, WORK)).inc()


def intake_message(fate: str) -> None:
    """One message off the events queue: stored (or ``accepted``), duplicate, rejected,
    dead_lettered, requeued, or held while the database is unavailable."""
    fate = "stored" if fate == "accepted" else fate  # the inbox's word for a stored event
    _metrics().intake.labels(_pick(fate, INTAKE_FATES)).inc()


def intake_paused_probe() -> None:
    """The paused intake probed the database and found it still unavailable (every 1 to 30 s
    while it lasts: the alert on a long outage counts these)."""
    _metrics().paused_probes.inc()


def sweeper_reenqueued(work: str, count: int = 1) -> None:
    """The sweeper enqueued stuck work again: ``order`` or ``redeem_request``."""
    if count > 0:
        _metrics().swept.labels(_pick(work, SWEPT)).inc(count)


def backfill_redriven(kind: str, count: int = 1) -> None:
    """The backfill reset redemptions of ``kind`` to pending and re-drove them."""
    if count > 0:
        _metrics().redriven.labels(_pick(kind, KINDS)).inc(count)


def backfill_run(*, succeeded: bool) -> None:
    """The nightly backfill task finished (or raised): counted, and its time kept, so an alert
    can tell that the latest run failed."""
    result = "succeeded" if succeeded else "failed"
    m = _metrics()
    m.backfill_runs.labels(result).inc()
    m.backfill_last_run.labels(result).set_to_current_time()


# --- label vocabulary ---------------------------------------------------------------------------


def endpoint_of(path: str) -> str:
    path = path.split("?", 1)[0]
    for prefix, name in ENDPOINTS:
        if path.startswith(prefix):
            return name
    return OTHER


def _pick(value: str | None, vocabulary: frozenset[str]) -> str:
    return value if value in vocabulary else OTHER


def _code(code: int | None) -> str:
    if code is None:
        return NONE
    return str(code) if code in CODES else OTHER


def _http_class(status: int | None) -> str:
    if status is None:
        return NONE
    return f"{status // 100}xx" if 100 <= status <= 599 else OTHER


# --- the metric objects ---------------------------------------------------------------------------


class _Metrics:
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
_instance: _Metrics | None = None


def _metrics() -> _Metrics:
    global _instance
    if _instance is None:
        with _lock:  # two threads registering the same metric twice would raise
            if _instance is None:
                _instance = _Metrics()
    return _instance


def local_registry() -> CollectorRegistry:
    """This process's own values (what is served when there is no multiprocess directory)."""
    return _metrics().registry


# --- counting outcomes on commit ----------------------------------------------------------------


_listening = False


def _listen_to_sessions() -> None:
    global _listening
    if _listening:
        return
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    with _lock:
        if not _listening:  # listening twice would count every outcome twice
            event.listen(Session, "after_commit", _count_committed)
            # Runs after after_commit; a transaction that ends any other way rolled back.
            event.listen(Session, "after_transaction_end", _forget_unfinished)
            _listening = True


def _count_committed(session: Session) -> None:
    pending = session.info.pop(_PENDING_OUTCOMES, None)
    if not pending:
        return
    counter = _metrics().outcomes
    for labels in pending:
        counter.labels(*labels).inc()


def _forget_unfinished(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(_PENDING_OUTCOMES, None)
